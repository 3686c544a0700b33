"""``entropyrl train``: run (or resume) one training job from a preset and overrides."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    """Register the ``train`` subcommand."""
    p = sub.add_parser(
        "train",
        help="train a policy with RL from a YAML preset",
        description=(
            "Train with RL on verifiable rewards. The config is a shipped preset name "
            "(e.g. testbed/kl_cov) or a YAML file; override any field with key=value "
            "(e.g. optim.lr=5e-7 loss.kl_cov.ratio=2e-4). Restarting the same command "
            "resumes from the newest checkpoint in --out."
        ),
    )
    p.add_argument("--config", "-c", help="preset name or YAML file (default: all defaults)")
    p.add_argument("--out", "-o", type=Path, help="run directory (metrics, checkpoints)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument("--help-config", action="store_true",
                   help="list every config field with its default and help, then exit")
    p.add_argument("--list-presets", action="store_true", help="list shipped presets and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the config, validate it, train."""
    from entropyrl.config import describe_fields, load_config, preset_names
    from entropyrl.errors import UserError

    if args.list_presets:
        print("\n".join(preset_names()))
        return 0
    if args.help_config:
        for name, default, text in describe_fields():
            print(f"{name:<36} {default:<14} {text}")
        return 0
    if args.out is None:
        raise UserError("missing --out DIR: the directory for metrics and checkpoints.")
    cfg = load_config(args.config, args.overrides)
    from entropyrl.train import train

    train(cfg, args.out)
    print(f"done: metrics in {args.out / 'metrics.jsonl'}")
    return 0
