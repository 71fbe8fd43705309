"""codelora: adapt a small code model to one code base with 4-bit QLoRA, merge it, and benchmark it."""

__version__ = "0.1.0"
