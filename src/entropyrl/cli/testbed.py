"""``entropyrl testbed build``: rebuild the embedded base model bit-for-bit from its seed."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from entropyrl.errors import UserError


def add_parser(sub: Any) -> None:
    """Register the ``testbed`` subcommand."""
    p = sub.add_parser(
        "testbed",
        help="rebuild the embedded testbed base model",
        description=(
            "Pre-trains the testbed's tiny Qwen2 base model on noisy arithmetic solutions "
            "(a few minutes on a CPU) and writes it in Hugging Face format. With the default "
            "seed the result equals the shipped checkpoint byte for byte on the same torch "
            "build (see docs/testbed.md)."
        ),
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = actions.add_parser("build", help="pre-train the base model into --out")
    b.add_argument("--out", type=Path, required=True, help="output directory")
    b.add_argument("--seed", type=int, default=0, help="build seed (0 = the shipped model)")
    b.add_argument("--steps", type=int, help="override the number of training steps")
    b.add_argument("--no-eval", action="store_true", help="skip the validation figures")
    b.add_argument("--hidden", type=int,
                   help="hidden size over 4 heads (default 96, the shipped model, head size "
                        "24; 128 gives head size 32, which vLLM's CPU build runs)")
    b.add_argument("--p-borrow", type=float, metavar="P",
                   help="probability of a forgotten borrow in subtraction solutions (default "
                        "0.7, the shipped model; 0.25, the carry rate, with --p-comma 0 gives "
                        "the earliest base model)")
    b.add_argument("--p-comma", type=float, metavar="P",
                   help="probability that a separator between scratchpad cells is written ',' "
                        "instead of a space, a style fork the checker ignores (default 0.15, "
                        "the shipped model; 0 gives the fork-free base model)")
    b.add_argument("--p-comma-slip", type=float, metavar="P",
                   help="digit-slip probability of a cell written after a ',' (default 0.9, "
                        "the shipped model: the comma is the sloppy path; 0.06, the recipe's "
                        "digit-slip rate, makes the fork benign)")
    p.set_defaults(func=run)


_NOISE_OPTIONS = ("p_borrow", "p_comma", "p_comma_slip")


def run(args: argparse.Namespace) -> int:
    """Build into ``--out`` and print the recorded figures."""
    import json

    from entropyrl.testbed.build import build, config_for

    noise = {k: getattr(args, k) for k in _NOISE_OPTIONS if getattr(args, k) is not None}
    try:
        cfg = config_for(args.seed, steps=args.steps, noise=noise, hidden=args.hidden)
    except ValueError as err:
        raise UserError(f"{err}. Check --steps, --hidden and the --p-* options.") from None
    info = build(args.out, cfg, evaluate_model=not args.no_eval, log_every=100)
    print(json.dumps({k: v for k, v in info.items() if k != "recipe"}, indent=2))
    return 0
