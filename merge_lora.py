#!/usr/bin/env python
"""Thin entry point: see `python merge_lora.py --help` (implemented in codelora/merging.py)."""

import sys

from codelora.cli import main

if __name__ == "__main__":
    sys.exit(main(["merge", *sys.argv[1:]]))
