"""Shared CLI plumbing: config flags, one-line errors, and the `codelora` command.

Every stage's `main(argv)` calls `run_stage`, so all scripts behave alike: `--config FILE` plus
flag overrides, `--debug` for tracebacks, a user's mistake printed as one `error:` line with exit
code 2, an unexpected failure as one line with exit code 1, Ctrl-C as exit code 130.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from codelora.config import add_config_arguments, build_config, load_yaml
from codelora.utils import UserError, setup_logging

log = logging.getLogger("codelora")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        self.exit(2, f"{self.prog}: error: {message}\n")


def make_parser(cls: type, prog: str, description: str, examples: str = "") -> argparse.ArgumentParser:
    parser = _Parser(
        prog=prog,
        description=description,
        epilog=f"examples:\n{examples}" if examples else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="YAML file (flat, or with one section per stage)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    add_config_arguments(parser, cls)
    return parser


def parse_config(cls: type, argv: Sequence[str] | None, prog: str, description: str, examples: str, section: str):
    parser = make_parser(cls, prog, description, examples)
    args = vars(parser.parse_args(argv))
    config_path, debug = args.pop("config"), args.pop("debug")
    yaml_values = load_yaml(config_path) if config_path else None
    return build_config(cls, yaml_values, args, section=section), debug


def run_stage(
    cls: type,
    fn: Callable[[Any], Any],
    argv: Sequence[str] | None,
    *,
    prog: str,
    description: str,
    examples: str = "",
    section: str,
) -> int:
    """Parse the config, run `fn(config)`, and turn failures into one clear line + exit code."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])

    def parse_and_run() -> Any:
        cfg, _ = parse_config(cls, argv, prog, description, examples, section)
        return fn(cfg)

    return run_guarded(prog, debug, parse_and_run)


def run_guarded(prog: str, debug: bool, fn: Callable[[], Any]) -> int:
    """Run `fn()` as a command: its int result (or 0) is the exit code; a user's mistake is one
    `error:` line and 2, Ctrl-C 130, anything else one line and 1 (`debug`: tracebacks instead)."""
    setup_logging(debug)
    try:
        result = fn()
        return result if isinstance(result, int) else 0
    except UserError as err:
        if debug:
            raise
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the last line of defence for a CLI
        if debug:
            raise
        print(f"{prog}: error: {type(err).__name__}: {err} (rerun with --debug for a traceback)", file=sys.stderr)
        return 1


# stage name -> module whose main(argv) runs it
COMMANDS = {
    "parse": "codelora.parse",
    "preprocess": "codelora.preprocess",
    "train": "codelora.training",
    "merge": "codelora.merging",
    "benchmark": "codelora.benchmarking",
    "bleu": "codelora.metrics",
    "pipeline": "codelora.pipeline",
    "bootstrap": "codelora.bootstrap",
    "demo": "codelora.demo",
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        names = ", ".join(COMMANDS)
        stream = sys.stdout if argv and argv[0] in ("-h", "--help") else sys.stderr
        print(f"usage: codelora {{{names}}} [options]   (codelora COMMAND --help for each)", file=stream)
        return 0 if stream is sys.stdout else 2
    try:
        module = importlib.import_module(COMMANDS[argv[0]])
    except ModuleNotFoundError as err:
        if not err.name or err.name.split(".")[0] == "codelora":
            raise  # our own module missing is a bug, not the user's environment
        print(f"codelora: error: {argv[0]} needs the Python package '{err.name}', which is not installed "
              "(pip install -r requirements.txt)", file=sys.stderr)
        return 1
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
