"""The optional compiled policy (``model.compile``): torch.compile on the training forward.

What is compiled: the policy's decoder body (``model.base_model``, e.g. ``Qwen2Model``: the
embedding, every layer, the final norm), in place. Every training forward runs through it:
the update's forward and backward, the no-grad scoring of log π_old, the Clip-Cov / KL-Cov
selection pass, the ΔH re-scoring and the validation entropies
(:func:`entropyrl.policy.response_token_stats` calls the body, then computes log-probs and
entropies from its hidden states in chunks, eagerly). The LM head and the token statistics
stay eager: their chunk loops and autograd Functions are already memory-bound and fused by
hand (``docs/tokenstats.md``).

Why in place (``nn.Module.compile``): ``torch.compile(module)`` returns a wrapper whose
parameters are named ``_orig_mod.…``, names that would reach the optimizer state and the
``save_pretrained`` checkpoints; the in-place form leaves the module, its parameter names and
any wrapper's hooks (DDP, FSDP2) as they were. accelerate's ``TorchDynamoPlugin`` compiles inside
``prepare`` by wrapping (or by copying modules, for regional compilation), and compiles the
whole model, generation included, so it is not used here.

Why ``dynamic=True``: every step has other response lengths and row counts; compiled with
static shapes each new length would recompile (tens of seconds each on a CPU). With dynamic
shapes one graph serves every length; a new graph is made only per grad mode (update vs
scoring), train/eval mode, autocast state, and for a batch of exactly one row (sizes 0 and 1
are specialised).

Why generation stays eager: compiling the decode step too (the same body, called by
``generate`` with a growing KV cache) costs three more graphs (~56 s on the CPU testbed) for a
``generate`` ~0.88x as long (~0.025 s a testbed step: ~2,000 steps to earn it back); the
engine runs ``generate`` under ``torch.compiler.set_stance("force_eager")`` (:func:`eager`).
Measurements: ``bench/bench_compile.py``, docs/scale.md.

Numerics: compiled log-probs differ from eager ones by float rounding (~1e-6), so a compiled
run follows an eager one to float tolerance, not bitwise. Within a compiled run the no-grad
scoring and the update's forward agree exactly on the CPU, which matters for KL-Cov: its
penalty β·|log π − log π_old| has a kink where the two are equal (the first update of a
step), and log-probs from differently compiled forwards would take a ±β subgradient there.
"""

from __future__ import annotations

import weakref
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from entropyrl.errors import UserError

COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")

# The bodies compiled by compile_policy (weak: a dropped model is not kept alive).
_COMPILED: weakref.WeakSet[torch.nn.Module] = weakref.WeakSet()


def policy_body(model: Any) -> torch.nn.Module:
    """The decoder body of a causal LM (``base_model``), through a DDP wrapper; else the model."""
    inner = getattr(model, "module", model)
    body = getattr(inner, "base_model", None)
    return body if isinstance(body, torch.nn.Module) else inner


def compile_policy(model: Any, mode: str = "default") -> torch.nn.Module:
    """Compile the policy's decoder body in place, with dynamic shapes; returns the body.

    Args:
        model: the trained causal LM, as ``accelerator.prepare`` returned it (DDP-wrapped or
            FSDP2-sharded: compiled in place after, their hooks keep running).
        mode: ``torch.compile``'s mode, one of :data:`COMPILE_MODES` (``default`` = none).

    Raises:
        UserError: this torch cannot run generation eager beside a compiled body (< 2.6).
    """
    if mode not in COMPILE_MODES:
        raise ValueError(f"mode: expected one of {list(COMPILE_MODES)}, got {mode!r}")
    if not hasattr(torch.compiler, "set_stance"):
        raise UserError(f"model.compile=true needs torch >= 2.6 (this is {torch.__version__}): "
                        "generation runs eager beside the compiled forward through "
                        "torch.compiler.set_stance. Upgrade torch or set model.compile=false.")
    body = policy_body(model)
    body.compile(dynamic=True, mode=None if mode == "default" else mode)
    _COMPILED.add(body)
    return body


def is_compiled(model: Any) -> bool:
    """Whether :func:`compile_policy` compiled this model's body."""
    return policy_body(model) in _COMPILED


def eager(model: Any) -> AbstractContextManager[Any]:
    """A context in which a model compiled by :func:`compile_policy` runs eager (generation)."""
    if not is_compiled(model):
        return nullcontext()
    return torch.compiler.set_stance("force_eager")
