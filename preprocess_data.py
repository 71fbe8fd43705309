#!/usr/bin/env python
"""Thin entry point: see `python preprocess_data.py --help` (implemented in codelora/preprocess.py)."""

import sys

from codelora.cli import main

if __name__ == "__main__":
    sys.exit(main(["preprocess", *sys.argv[1:]]))
