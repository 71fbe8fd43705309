#!/usr/bin/env python
"""Thin entry point: see `python parse_data.py --help` (implemented in codelora/parse.py)."""

import sys

from codelora.cli import main

if __name__ == "__main__":
    sys.exit(main(["parse", *sys.argv[1:]]))
