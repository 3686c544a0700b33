"""What a log's numbers mean in the framework that wrote it: default keys and step conventions.

The law pairs a score with the entropy *of the policy that was evaluated*. Frameworks differ in
when they log the two within a step ``s``:

- **entropyrl** (ours): validation at step ``s`` runs *before* the update, on the policy that
  then samples the batch whose entropy is ``train/entropy`` (docs/metrics.md). Same step = same
  policy.
- **verl**: ``actor/entropy`` at step ``s`` is measured on the rollout of the policy *before*
  update ``s``; the validation logged at step ``s`` runs *after* it. The policy evaluated at
  ``s`` is the one whose entropy is logged at ``s + 1``; the pre-training validation (step 0,
  or −1 in logs whose steps start at 0) pairs with the first logged entropy.
- **trl** (Hugging Face ``trainer_state.json``): ``entropy`` at ``global_step = s`` comes from
  the loss of update ``s``; evaluation at ``s`` runs after it: same convention as verl.
- **unknown** (a CSV of unknown origin): pairing by step number, said in the output.

:class:`Framework` holds, per framework, the lag (in steps) from an evaluation to the entropy
of its policy, and the keys tried when the user names none.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

PAIRINGS: tuple[str, ...] = ("same-step", "policy")


@dataclass(frozen=True)
class Framework:
    """Conventions of one training framework's logs."""

    name: str
    entropy_keys: tuple[str, ...]  # tried in order when --entropy-key is not given
    # Each candidate: patterns merged into one score series (a pre-training alias included).
    score_keys: tuple[tuple[str, ...], ...]
    policy_lag: float | None  # steps from an evaluation to its policy's entropy; None: unknown
    default_pair: str
    origin: str  # "first-minus-1": progress C = step − (first step − 1); "zero": C = step


OURS = Framework("entropyrl", ("train/entropy",), (("val/acc",),), 0.0, "same-step", "first")
VERL = Framework(
    "verl",
    ("actor/entropy", "actor/entropy_loss"),
    (("val-core/*/reward/mean@*",), ("val/test_score/*", "test_score/*"), ("val/acc",)),
    1.0,
    "policy",
    "first-minus-1",
)
TRL = Framework(
    "trl",
    ("entropy", "train/entropy"),
    (("eval_reward",), ("eval_accuracy",), ("eval/reward",)),
    1.0,
    "policy",
    "zero",
)
UNKNOWN = Framework(
    "unknown",
    ("train/entropy", "actor/entropy", "entropy"),
    (("val/acc",),),
    None,
    "same-step",
    "zero",
)
FRAMEWORKS = {f.name: f for f in (OURS, VERL, TRL, UNKNOWN)}


def guess_framework(fmt: str, keys: Sequence[str]) -> Framework:
    """The framework that wrote a log, from its format and its key names."""
    if fmt in ("verl-console", "verl-jsonl"):
        return VERL
    if fmt == "trainer-state":
        return TRL
    names = [k.rpartition(" - ")[2] for k in keys]  # W&B chart export: "<run> - KEY"
    names = [n[5:] if n.startswith("data/") else n for n in names]

    def has(pattern: str) -> bool:
        return any(fnmatch.fnmatchcase(n, pattern) for n in names)

    if has("actor/*") and (
        has("critic/*")
        or has("val-core/*")
        or has("val/test_score/*")
        or has("timing_s/*")
        or has("timing/*")
    ):
        return VERL
    if has("train/entropy") and (has("dyn/*") or has("loss/*") or has("val/acc")):
        return OURS
    return UNKNOWN
