"""Shared CLI plumbing: config flags, one-line errors, and the `codelora` command.

Every stage (config.STAGES) runs through `run_command`, so all scripts behave alike: `--config FILE` plus
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

from codelora.config import STAGES, add_config_arguments, build_config, load_yaml
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


def parse_flags(cls: type, argv: Sequence[str] | None, prog: str, description: str = "",
                examples: str = "") -> tuple[str | None, bool, dict[str, Any]]:
    """(--config path, --debug, the config flags given) from a command line."""
    args = vars(make_parser(cls, prog, description, examples).parse_args(argv))
    return args.pop("config"), args.pop("debug"), args


def parse_config(cls: type, argv: Sequence[str] | None, prog: str, description: str, examples: str, section: str):
    config_path, debug, flags = parse_flags(cls, argv, prog, description, examples)
    yaml_values = load_yaml(config_path) if config_path else None
    return build_config(cls, yaml_values, flags, section=section), debug


def run_command(name: str, argv: Sequence[str] | None) -> int:
    """`codelora NAME ...` for a stage of config.STAGES: parse its config (defaults < YAML section
    < flags), run its run function, and turn failures into one clear line + exit code."""
    stage = STAGES[name]
    module = importlib.import_module(stage.module)
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])

    def parse_and_run() -> Any:
        cfg, _ = parse_config(stage.config, argv, stage.prog, module.DESCRIPTION, module.EXAMPLES, name)
        return getattr(module, stage.run)(cfg)

    return run_guarded(stage.prog, debug, parse_and_run)


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
    except KeyboardInterrupt as err:
        advice = getattr(err, "advice", None)  # utils.Interrupted: how to continue
        print(f"{prog}: interrupted" + (f"; {advice}" if advice else ""), file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the last line of defence for a CLI
        if debug:
            raise
        print(f"{prog}: error: {type(err).__name__}: {err} (rerun with --debug for a traceback)", file=sys.stderr)
        return 1


# Commands that drive the stages rather than being one: their module's main(argv) runs them.
DRIVERS = {"pipeline": "codelora.pipeline", "demo": "codelora.demo"}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in (*STAGES, *DRIVERS):
        names = ", ".join((*STAGES, *DRIVERS))
        stream = sys.stdout if argv and argv[0] in ("-h", "--help") else sys.stderr
        print(f"usage: codelora {{{names}}} [options]   (codelora COMMAND --help for each)", file=stream)
        if argv and stream is sys.stderr:
            print(f"codelora: error: unknown command '{argv[0]}'; choose from {names}", file=stream)
        return 0 if stream is sys.stdout else 2
    try:
        module = importlib.import_module(STAGES[argv[0]].module if argv[0] in STAGES else DRIVERS[argv[0]])
    except ModuleNotFoundError as err:
        if not err.name or err.name.split(".")[0] == "codelora":
            raise  # our own module missing is a bug, not the user's environment
        print(f"codelora: error: {argv[0]} needs the Python package '{err.name}', which is not installed "
              "(pip install -r requirements.txt)", file=sys.stderr)
        return 1
    return run_command(argv[0], argv[1:]) if argv[0] in STAGES else module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
