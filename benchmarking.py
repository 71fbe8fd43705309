#!/usr/bin/env python
"""Thin entry point: see `python benchmarking.py --help` (implemented in codelora/benchmarking.py)."""

import sys

from codelora.cli import main

if __name__ == "__main__":
    sys.exit(main(["benchmark", *sys.argv[1:]]))
