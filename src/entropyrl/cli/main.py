"""Entry point of the ``entropyrl`` command.

Each subcommand lives in its own module of this package exposing ``add_parser(subparsers)``,
which registers its arguments and sets ``func`` to a callable taking the parsed namespace and
returning an exit code. Heavy imports (torch, transformers) happen inside ``func`` so that
``entropyrl --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from entropyrl import __version__
from entropyrl.errors import RunInterrupted, UserError

# Subcommand modules, in the order `--help` lists them.
SUBCOMMANDS: tuple[str, ...] = ("train", "eval", "demo", "fit", "report", "testbed")


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="entropyrl",
        description=(
            "Reinforcement learning of reasoning language models with verifiable rewards, "
            "built around policy entropy: Clip-Cov / KL-Cov training, entropy-dynamics "
            "diagnostics and the entropy-performance law R = -a*exp(H) + b."
        ),
    )
    parser.add_argument("--version", action="version", version=f"entropyrl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"entropyrl.cli.{name}")
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; user errors print one paragraph to stderr and return exit code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0
    try:
        return int(func(args) or 0)
    except UserError as err:
        print(f"entropyrl {args.command}: error: {err}", file=sys.stderr)
        return 2
    except RunInterrupted as stop:
        print(f"entropyrl {args.command}: {stop}", file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:
        print(f"entropyrl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
