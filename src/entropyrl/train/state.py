"""Checkpoints: ``<run>/checkpoints/step_N/`` = the model in Hugging Face format + trainer state.

``trainer_state.pt`` holds the optimizer and scheduler states, the step, the prompt sampler's
position, the RNG states (Python, NumPy, torch) and ``extra``, a dictionary for the state of
later components (e.g. an entropy controller); a run with PRIME adds its reward model in
``step_N/prm/`` and that model's optimizer state. Under FSDP the full model and optimizer states
are gathered by a collective on every rank and written by rank 0. The model is saved with
``save_pretrained`` so any checkpoint loads with ``AutoModelForCausalLM.from_pretrained``.
A checkpoint is written to a temporary directory and renamed into place, so a crash while
saving never leaves a half-written ``step_N``.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import yaml

from entropyrl.config import to_dict
from entropyrl.distributed import Dist, full_model_state, load_optimizer_state, optimizer_state
from entropyrl.errors import UserError
from entropyrl.tasks import PromptSampler
from entropyrl.train.prime import PRM_DIR

if TYPE_CHECKING:
    from entropyrl.train.setup import Run
    from entropyrl.train.update import Learner

STATE_FILE = "trainer_state.pt"
RUN_CONFIG = "run_config.yaml"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoint_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and (p / STATE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = checkpoint_dirs(run_dir)
    return found[-1][1] if found else None


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002 (the global RNG is what we restore)
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: Any,
    tokenizer: Any,
    trainer_state: dict[str, Any],
    keep: int,
    *,
    state_dict: dict[str, torch.Tensor] | None = None,
    extra_models: dict[str, tuple[Any, dict[str, torch.Tensor] | None]] | None = None,
) -> Path:
    """Write ``checkpoints/step_{step}`` atomically and delete all but the newest ``keep``.

    ``state_dict`` (the full parameters, when the model itself holds shards) is what
    ``save_pretrained`` writes instead of ``model.state_dict()``. ``extra_models`` maps a
    sub-directory name to another trained model and its full state dict (or None), each saved
    the same way (e.g. PRIME's PRM in ``prm/``).
    """
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step}"
    tmp = root / f".tmp_step_{step}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)
        for name, (other, other_state) in (extra_models or {}).items():
            other.save_pretrained(tmp / name, safe_serialization=True, state_dict=other_state)
        if "config" in trainer_state:  # readable without loading the optimizer state
            (tmp / RUN_CONFIG).write_text(yaml.safe_dump(trainer_state["config"],
                                                         sort_keys=False))
        torch.save(trainer_state, tmp / STATE_FILE)
    except (OSError, RuntimeError) as err:  # torch.save reports a full disk as RuntimeError
        written = _size(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        free = shutil.disk_usage(root).free
        previous = latest_checkpoint(run_dir)
        need = max(_size(previous) if previous else 0, written)
        kept = f"the last checkpoint ({previous.name}) is intact" if previous else (
            "no earlier checkpoint exists")
        raise UserError(
            f"cannot write the checkpoint of step {step} in {root} ({err}). "
            f"{free / 2**30:.1f} GiB are free and a checkpoint needs about {need / 2**30:.1f} "
            f"GiB; free some space (or lower keep_checkpoints) and run the same command to "
            f"resume; {kept}."
        ) from None
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    for _, old in checkpoint_dirs(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _size(path: Path) -> int:
    """Bytes of the files below ``path`` (0 if it does not exist)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def load_trainer_state(path: Path) -> dict[str, Any]:
    """The trainer state saved beside a checkpoint's model."""
    state: dict[str, Any] = torch.load(path / STATE_FILE, weights_only=False)
    return state


def save_run(run: Run) -> None:
    """Checkpoint ``run`` at its current step (every rank calls; rank 0 writes)."""
    learner = run.learner
    learner.accelerator.wait_for_everyone()
    params = _saved_parameters(learner)
    optim = optimizer_state(learner.model, learner.optimizer)
    extra_models, prm_optim = {}, None
    if run.prm is not None:
        prm_module = run.prm.accelerator.unwrap_model(run.prm.model)
        extra_models[PRM_DIR] = (prm_module, _saved_parameters(run.prm))
        prm_optim = optimizer_state(run.prm.model, run.prm.optimizer)
    if run.dist.is_main:
        state = {
            "step": run.step,
            "optimizer": optim,
            "scheduler": learner.scheduler.state_dict(),
            "sampler": run.sampler.state_dict(),
            "rng": rng_state(),
            "config": to_dict(run.cfg),
            "extra": run.extra_state,
        }
        if prm_optim is not None:
            state["prm_optimizer"] = prm_optim
        save_checkpoint(run.out_dir, run.step, learner.accelerator.unwrap_model(learner.model),
                        run.tokenizer, state, run.cfg.keep_checkpoints, state_dict=params,
                        extra_models=extra_models)
    learner.accelerator.wait_for_everyone()


def _saved_parameters(learner: Learner) -> dict[str, torch.Tensor] | None:
    """The full parameters to save when the model is sharded (a collective), else None."""
    if not learner.sharded:
        return None
    # The gathered state lists a tied weight under both names (e.g. lm_head and the
    # embedding); keep the names the module itself holds, as save_pretrained would.
    module = learner.accelerator.unwrap_model(learner.model)
    held = {n for n, _ in module.named_parameters()} | {n for n, _ in module.named_buffers()}
    return {k: v for k, v in full_model_state(learner.model).items() if k in held}


def load_checkpoint_state(path: Path, learner: Learner, sampler: PromptSampler, dist: Dist, *,
                          prm: Learner | None = None) -> tuple[int, dict[str, Any]]:
    """Restore the optimizer, scheduler, sampler and RNG from ``path``; (step, extra state).

    The model's weights (and the PRM's, from ``prm/``) were loaded from the same directory by
    ``from_pretrained``; ``prm`` gets its optimizer state back.
    """
    state = load_trainer_state(path)
    load_optimizer_state(learner.model, learner.optimizer, state["optimizer"])
    if prm is not None:
        load_optimizer_state(prm.model, prm.optimizer, state["prm_optimizer"])
    learner.scheduler.load_state_dict(state["scheduler"])
    sampler.load_state_dict(state["sampler"])
    set_rng_state(state["rng"])
    return int(state["step"]), dict(state.get("extra", {}))


def checkpoint_config(path: Path) -> dict[str, Any]:
    """The config a checkpoint was written with (its ``run_config.yaml``)."""
    if (path / RUN_CONFIG).is_file():
        config: dict[str, Any] = yaml.safe_load((path / RUN_CONFIG).read_text(encoding="utf-8"))
        return config
    return dict(load_trainer_state(path).get("config", {}))


def config_changes(old: dict[str, Any], new: dict[str, Any], prefix: str = "", *,
                   defaults: dict[str, Any] | None = None) -> list[tuple[str, Any, Any]]:
    """``(dotted key, old value, new value)`` of every leaf that differs.

    A key ``old`` lacks (a field added after it was written) reads as its value in
    ``defaults``, if given: a new field left at its default is not a change.
    """
    defaults = defaults or {}
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, defaults.get(key)), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            sub = defaults.get(key)
            changes += config_changes(a, b, f"{prefix}{key}.",
                                      defaults=sub if isinstance(sub, dict) else None)
        elif a != b:
            changes.append((f"{prefix}{key}", a, b))
    return changes


class RunLock:
    """An exclusive lock on a run directory (``<run>/.lock``), held while a run trains.

    A second process that tries to train into the same directory gets a
    :class:`~entropyrl.errors.UserError` naming the holder's PID. The lock is an ``flock`` on
    the file, so it is released when the holder exits, however it exits.
    """

    def __init__(self, run_dir: Path):
        import fcntl

        self.path = run_dir / ".lock"
        self._file = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._file.seek(0)
            holder = self._file.read().strip() or "unknown"
            self._file.close()
            raise UserError(
                f"{run_dir} is in use by another entropyrl run (PID {holder}). Wait for it to "
                "finish or stop it, or train into another --out directory."
            ) from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(str(os.getpid()))
        self._file.flush()

    def release(self) -> None:
        """Let another run take the directory."""
        if not self._file.closed:
            import fcntl

            self._file.seek(0)
            self._file.truncate()
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
