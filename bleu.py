#!/usr/bin/env python
"""Thin entry point: see `python bleu.py --help` (implemented in codelora/metrics.py)."""

import sys

from codelora.cli import main

if __name__ == "__main__":
    sys.exit(main(["bleu", *sys.argv[1:]]))
