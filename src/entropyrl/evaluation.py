"""Evaluation: greedy accuracy, avg@k and unbiased pass@k per data source.

- greedy accuracy: one greedy response per prompt, mean reward (the trainer's ``val/acc``, the
  ``R`` of the entropy–performance law);
- avg@k: ``k`` samples per prompt at the evaluation temperature, mean reward over all samples;
- pass@k: the unbiased estimator ``1 − C(n − c, k) / C(n, k)`` per prompt (``n`` samples, ``c``
  correct; Chen et al. 2021), averaged over prompts; with ``n = k`` it is the fraction of
  prompts with at least one correct sample;
- response length and token entropy (full-vocabulary, at the temperature that produced the
  responses) are means over the sampled responses, or the greedy ones when ``k = 0``;
- truncated: responses that hit the length limit without an end-of-sequence token.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from entropyrl.distributed import Dist
from entropyrl.policy import response_token_stats
from entropyrl.rewards.result import RewardResult
from entropyrl.rollout import Rollout, RolloutEngine, SamplingParams

# Prompts per engine call in the trainer's validation. On the CPU testbed 64 is the fastest
# measured (bench/bench_validation.py, CPU time of a validation): 256 in one call takes 1.62x
# (every decode loop runs to its longest response, and more rows make a long one likelier), 16
# takes 1.70x (per-call overhead).
VAL_BATCH_PROMPTS = 64
# Responses per forward when scoring the validation entropies (bounds its activations).
STATS_ROWS = 64

ScoreBatch = Callable[[list[str], list[dict[str, Any]]], list[RewardResult]]
# (kind, rows, texts, scores), one row/text/score per response
OnSamples = Callable[[str, list[dict[str, Any]], list[str], list[RewardResult]], None]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct (``k <= n``)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k: expected 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@dataclass(frozen=True)
class EvalSpec:
    """How one data source is evaluated.

    Attributes:
        greedy: compute greedy accuracy.
        k: samples per prompt for avg@k and pass@k (0 = none).
        temperature: temperature of the samples.
        max_new_tokens: response length limit.
        entropy_samples: samples per prompt whose token entropies the entropy metric scores
            (the first ones of each prompt; 0 = all ``k``). The length metrics count all.
    """

    greedy: bool = True
    k: int = 0
    temperature: float = 0.6
    max_new_tokens: int = 512
    entropy_samples: int = 0


@dataclass
class SourceResult:
    """Metrics of one data source (None where the spec did not ask for them)."""

    n_prompts: int
    greedy_acc: float | None
    avg_at_k: float | None
    pass_at_k: float | None
    k: int
    temperature: float | None
    response_len: float
    entropy: float
    truncated: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


class _Sums:
    def __init__(self) -> None:
        self.greedy = self.samples = self.passes = 0.0
        self.ent = self.tokens = self.ent_tokens = 0.0
        self.n_resp = self.truncated = 0
        self.forwards = 0  # entropy forwards run (a sharded model's are collectives)

    def add_stats(self, model: Any, roll: Rollout, temperature: float,
                  scored: Rollout | None = None) -> None:
        """Lengths and truncations of ``roll``; entropies of ``scored`` (default ``roll``)."""
        m = roll.response_mask
        self.tokens += float(m.sum())
        self.n_resp += len(roll)
        self.truncated += int(roll.truncated.sum())
        roll = roll if scored is None else scored
        ent = 0.0
        for r0 in range(0, len(roll), STATS_ROWS):
            rows = slice(r0, r0 + STATS_ROWS)
            st = response_token_stats(model, roll.input_ids[rows], roll.attention_mask[rows],
                                      roll.prompt_len, temperature=temperature,
                                      with_entropy=True)
            assert st.entropy is not None
            ent += float(st.entropy[roll.response_mask[rows]].sum())
            self.forwards += 1
        self.ent += ent
        self.ent_tokens += float(roll.response_mask.sum())


def planned_forwards(n_rows: int, spec: EvalSpec, batch_prompts: int) -> int:
    """The entropy forwards :func:`evaluate_source` runs for ``n_rows`` prompts."""
    per_prompt = 0
    if spec.k > 0:
        per_prompt = spec.entropy_samples if 0 < spec.entropy_samples < spec.k else spec.k
    elif spec.greedy:
        per_prompt = 1
    total = 0
    for start in range(0, n_rows, batch_prompts):
        total += -(-min(batch_prompts, n_rows - start) * per_prompt // STATS_ROWS)
    return total


def _match_forwards(model: Any, done: int, spec: EvalSpec, slices: Sequence[int],
                    batch_prompts: int, autocast: Callable[[], Any]) -> None:
    """Run idle forwards until this rank has run as many as the busiest rank.

    A sharded model's forward gathers its parameters from every rank, so every rank must run
    the same number of forwards; ranks with fewer validation rows make up the difference on
    one token. Every rank knows every slice's size, so no message is needed.
    """
    most = max(planned_forwards(n, spec, batch_prompts) for n in slices)
    if done < most:
        device = next(model.parameters()).device
        ids = torch.zeros((1, 1), dtype=torch.long, device=device)
        with autocast():
            for _ in range(most - done):
                model(input_ids=ids, attention_mask=torch.ones_like(ids))


def _sums_of(s: _Sums, dist: Dist) -> _Sums:
    """The sums of every rank."""
    keys = ("greedy", "samples", "passes", "ent", "tokens", "ent_tokens", "n_resp", "truncated")
    total = dist.sum([float(getattr(s, k)) for k in keys])
    out = _Sums()
    for k, v in zip(keys, total, strict=True):
        setattr(out, k, int(v) if k in ("n_resp", "truncated") else v)
    return out


@torch.no_grad()
def evaluate_source(
    engine: RolloutEngine,
    model: Any,
    rows: Sequence[dict[str, Any]],
    score_batch: ScoreBatch,
    spec: EvalSpec,
    *,
    batch_prompts: int = 64,
    on_batch: Callable[[int], None] | None = None,
    dist: Dist | None = None,
    autocast: Callable[[], Any] = contextlib.nullcontext,
    on_samples: OnSamples | None = None,
    sharded: bool = False,
) -> SourceResult:
    """Evaluate ``rows`` (one data source) as ``spec`` asks.

    Args:
        engine: samples the responses.
        model: the policy the engine samples from; scores the token entropies.
        rows: the source's rows (``prompt`` and what ``score_batch`` needs).
        score_batch: ``(texts, rows) -> results``; accuracies count the ``solved`` ones.
        spec: what to measure.
        batch_prompts: prompts per engine call.
        on_batch: called with the number of prompts after each batch.
        dist: with several ranks, each evaluates its own slice of ``rows`` and the sums are
            combined, so every rank returns the result over all rows.
        autocast: the compute context of the entropy forward.
        on_samples: called after each batch with ``(kind, rows, texts, results)``: ``kind``
            is ``greedy`` or ``sampled``, one row, text and reward result per response.
        sharded: ``model``'s forward is a collective over ``dist``'s ranks (FSDP); every rank
            then runs as many entropy forwards as the rank with the most rows.
    """
    dist = dist or Dist.single()
    per = -(-len(rows) // dist.world)
    mine = rows[dist.rank * per : (dist.rank + 1) * per]
    slices = [len(rows[r * per : (r + 1) * per]) for r in range(dist.world)]
    s = _Sums()
    greedy = SamplingParams(max_new_tokens=spec.max_new_tokens, greedy=True)
    sampled = SamplingParams(max_new_tokens=spec.max_new_tokens, temperature=spec.temperature)
    for start in range(0, len(mine), batch_prompts):
        chunk = list(mine[start : start + batch_prompts])
        prompts = [r["prompt"] for r in chunk]
        if spec.greedy:
            g = engine.generate(prompts, 1, greedy)
            greedy_results = score_batch(g.texts, chunk)
            s.greedy += sum(r.solved for r in greedy_results)
            if on_samples is not None:
                on_samples("greedy", chunk, g.texts, greedy_results)
            if spec.k == 0:
                with autocast():
                    s.add_stats(model, g, 1.0)
        if spec.k > 0:
            k = spec.k
            roll = engine.generate(prompts, k, sampled)
            per_response = [chunk[i // k] for i in range(len(roll))]
            results = score_batch(roll.texts, per_response)
            s.samples += sum(r.solved for r in results)
            if on_samples is not None:
                on_samples("sampled", per_response, roll.texts, results)
            for i in range(len(chunk)):
                c = sum(r.solved for r in results[i * k : (i + 1) * k])
                s.passes += pass_at_k(k, c, k)
            scored = None
            if 0 < spec.entropy_samples < k:
                keep = torch.arange(len(roll)) % k < spec.entropy_samples
                scored = roll.select(keep.nonzero().squeeze(1).to(roll.input_ids.device))
            with autocast():
                s.add_stats(model, roll, spec.temperature, scored)
        if on_batch is not None:
            on_batch(len(chunk))
    if sharded:
        if s.forwards != planned_forwards(len(mine), spec, batch_prompts):
            raise AssertionError("evaluate_source: its entropy forwards differ from its plan")
        _match_forwards(model, s.forwards, spec, slices, batch_prompts, autocast)
    s = _sums_of(s, dist)
    n = max(len(rows), 1)
    return SourceResult(
        n_prompts=len(rows),
        greedy_acc=s.greedy / n if spec.greedy else None,
        avg_at_k=s.samples / max(n * spec.k, 1) if spec.k else None,
        pass_at_k=s.passes / n if spec.k else None,
        k=spec.k,
        temperature=spec.temperature if spec.k else None,
        response_len=s.tokens / max(s.n_resp, 1),
        entropy=s.ent / max(s.ent_tokens, 1.0),
        truncated=s.truncated,
    )


def validate(
    engine: RolloutEngine,
    model: Any,
    rows: Sequence[dict[str, Any]],
    score_batch: ScoreBatch,
    *,
    k: int,
    temperature: float,
    max_new_tokens: int,
    acc: str = "greedy",
    dist: Dist | None = None,
    autocast: Callable[[], Any] = contextlib.nullcontext,
    entropy_samples: int = 0,
    sharded: bool = False,
) -> dict[str, float]:
    """The trainer's ``val/*`` metrics over all validation rows (see docs/metrics.md).

    ``acc`` chooses what ``val/acc`` (the law's ``R``) reports: ``greedy`` accuracy or the
    ``sampled`` avg@k; ``entropy_samples`` as in :class:`EvalSpec`. With several ranks each
    validates a slice (see :func:`evaluate_source`, also for ``sharded``).
    """
    spec = EvalSpec(greedy=True, k=k, temperature=temperature, max_new_tokens=max_new_tokens,
                    entropy_samples=entropy_samples)
    res = evaluate_source(engine, model, rows, score_batch, spec, dist=dist, autocast=autocast,
                          batch_prompts=VAL_BATCH_PROMPTS, sharded=sharded)
    greedy, sampled = float(res.greedy_acc or 0.0), float(res.avg_at_k or 0.0)
    return {
        "val/acc": sampled if acc == "sampled" else greedy,
        "val/greedy_acc": greedy,
        "val/avg_at_k": float(res.avg_at_k or 0.0),
        "val/pass_at_k": float(res.pass_at_k or 0.0),
        "val/entropy": res.entropy,
        "val/response_len": res.response_len,
    }
