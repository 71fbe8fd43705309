#!/usr/bin/env python
"""Thin entry point: see `python export_gguf.py --help` (implemented in codelora/export.py)."""

import sys

from codelora.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
