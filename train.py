#!/usr/bin/env python
"""Thin entry point: see `python train.py --help` (implemented in codelora/training.py)."""

import sys

from codelora.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
