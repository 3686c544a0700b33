"""``entropyrl train``: run (or resume) one training job from a preset and overrides."""

from __future__ import annotations

import argparse
import os
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
    p.add_argument("--allow-config-change", action="store_true",
                   help="resume even if the config differs from the checkpoint's (the change "
                        "is recorded in config_changes.jsonl)")
    p.add_argument("--unsafe-rlimits-only", action="store_true",
                   help="code tasks: run the answers WITHOUT the bubblewrap sandbox, under "
                        "resource limits only (they can read your files and use the network); "
                        "the same as data.code.unsafe_rlimits_only=true and "
                        "data.testbed_code.unsafe_rlimits_only=true")
    plan = p.add_argument_group(
        "dry run", "plan the per-device memory of the run without loading weights or data"
    )
    plan.add_argument("--dry-run", action="store_true",
                      help="print the resolved config and the memory plan, exit 2 if it won't fit")
    plan.add_argument("--world-size", type=int,
                      help="processes to plan for (default: $WORLD_SIZE or 1)")
    plan.add_argument("--device-memory", metavar="SIZE",
                      help="memory of one device, e.g. 80GiB, 80GB, 141GiB (default: this "
                           "machine's GPU, or its RAM when the run would use the CPU)")
    plan.add_argument("--sharding", choices=["fsdp", "none"],
                      help="FSDP full sharding or none (default: fsdp when "
                           "$ACCELERATE_USE_FSDP is true)")
    plan.add_argument("--prompt-tokens", type=int, default=512,
                      help="prompt length to plan for, in tokens (default: 512)")
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
    planning = [f for f in ("world_size", "device_memory", "sharding") if getattr(args, f)]
    if planning and not args.dry_run:
        flag = "--" + planning[0].replace("_", "-")
        raise UserError(f"{flag} only applies with --dry-run; add --dry-run or drop {flag}.")
    overrides = [*args.overrides,
                 *(["data.code.unsafe_rlimits_only=true",
                    "data.testbed_code.unsafe_rlimits_only=true"]
                   if args.unsafe_rlimits_only else [])]
    if args.dry_run:
        return dry_run(load_config(args.config, overrides), args)
    if args.out is None:
        raise UserError("missing --out DIR: the directory for metrics and checkpoints.")
    cfg = load_config(args.config, overrides)
    from entropyrl.train import train

    train(cfg, args.out, allow_config_change=args.allow_config_change)
    print(f"done: metrics in {args.out / 'metrics.jsonl'}")
    return 0


def dry_run(cfg: Any, args: argparse.Namespace) -> int:
    """Print the resolved config and the per-device memory plan; UserError if it won't fit."""
    import yaml

    from entropyrl import plan
    from entropyrl.config import to_dict
    from entropyrl.errors import UserError
    from entropyrl.models import resolve_model_path
    from entropyrl.plan_fix import refusal
    from entropyrl.tasks import check_data

    check_data(cfg.data)
    world = args.world_size
    if world is None:
        world = int(os.environ.get("WORLD_SIZE") or 1)
    if world < 1 or args.prompt_tokens < 1:
        raise UserError("--world-size and --prompt-tokens: expected positive integers.")
    sharding = args.sharding or (
        "fsdp" if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("true", "1") else "none"
    )
    print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
    print(f"# world size: {world} process(es), sharding: {sharding}")
    plan.check_world(cfg, world)
    device_bytes, device = _device_memory(cfg, args.device_memory)
    shape, source = plan.load_shape(resolve_model_path(cfg.model.path))
    sharded = sharding == "fsdp"
    memory = plan.memory_plan(shape, cfg, world, sharded, args.prompt_tokens, device_bytes)
    print(f"# architecture: {source}; device: {device}; prompts of {args.prompt_tokens} tokens")
    print(plan.format_plan(memory, device_bytes))
    if memory.total > device_bytes or not memory.engine_fits:
        raise UserError(refusal(shape, cfg, world, sharded, args.prompt_tokens, device_bytes))
    return 0


def _device_memory(cfg: Any, given: str | None) -> tuple[int, str]:
    """Bytes of the device to plan for, and its description."""
    import torch

    from entropyrl.errors import UserError
    from entropyrl.plan import parse_memory

    if given is not None:
        return parse_memory(given), f"--device-memory {given}"
    if cfg.model.device != "cpu" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return int(props.total_memory), f"{props.name} (this machine)"
    if cfg.model.device == "cuda":
        raise UserError(
            "model.device is 'cuda' but this machine has no CUDA device, so the dry-run cannot "
            "read the device memory: give --device-memory (e.g. --device-memory 80GiB) to plan "
            "for another machine."
        )
    try:  # model.device cpu, or auto without a GPU: the run would use host memory
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        raise UserError("cannot read this machine's memory: give --device-memory.") from None
    return int(ram), "host memory (the run would use the CPU)"
