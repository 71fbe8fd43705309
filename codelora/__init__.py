"""codelora: adapt a small code model to one code base with 4-bit QLoRA, merge it, and benchmark it."""

import logging

__version__ = "0.1.0"


class _DropMessage(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


# bitsandbytes warns when it is imported (by peft/transformers, on every run, with or without
# 4-bit) that the optional `kernels` package for faster CPU 4-bit matmuls is missing. Drop that one
# message from that one logger, before anything imports bitsandbytes; its other warnings stay.
logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_DropMessage("from kernels-community"))
