"""A step's reward info as metrics: numbers averaged, labels counted, over the global batch.

A reward returns ``RewardResult(score, solved, info)``; ``info`` is free-form. Per step:

* a number (``bool``, ``int``, finite ``float``) under ``key`` gives ``reward/<key>``: its mean
  over the responses whose info holds that key as a number;
* a string gives ``reward/<key>/<value>``: the fraction of the responses whose info holds
  ``key`` as a string that hold this value (the code reward's ``status``: ``reward/status/ok``,
  ``reward/status/timeout``, ...). A key with more than :data:`MAX_LABELS` distinct strings in
  the step is free text, not a label, and is not logged.

Anything else (``None``, lists, non-finite numbers) is ignored.

Ranks may see different keys (no timeout on one rank, three on another). Every rank must call
the same collectives with tensors of the same length, so the ranks first agree on the names:
each rank's sorted names are gathered (:meth:`Dist.gather_rows` on their UTF-8 bytes) and
every rank takes the same sorted union; then one :meth:`Dist.sum` adds the per-name sums and
counts. Each rank makes exactly these calls every step, whatever its responses held.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from entropyrl.distributed import Dist

MAX_LABELS = 16
Entry = tuple[str, ...]  # ("num", key) or ("str", key, value)


def _entries(info: Mapping[str, Any]) -> list[Entry]:
    out: list[Entry] = []
    for key, value in info.items():
        if not isinstance(key, str):
            continue
        if isinstance(value, str):
            out.append(("str", key, value))
        elif isinstance(value, bool | int) or (isinstance(value, float) and math.isfinite(value)):
            out.append(("num", key))
    return out


def _agreed(local: set[Entry], dist: Dist) -> list[Entry]:
    """The sorted union of every rank's entries (the same list on every rank)."""
    if dist.world == 1:
        return sorted(local)
    # One JSON array per line; the trailing newline keeps every rank's tensor non-empty.
    text = "".join(json.dumps(e) + "\n" for e in sorted(local))
    mine = torch.tensor(list(text.encode("utf-8")), dtype=torch.uint8)
    everyone = bytes(dist.gather_rows(mine).tolist()).decode("utf-8")
    return sorted({tuple(json.loads(line)) for line in everyone.splitlines() if line})


def reward_info_metrics(infos: Sequence[Mapping[str, Any]], dist: Dist) -> dict[str, float]:
    """``reward/*`` metrics of this rank's ``infos`` together with every other rank's.

    Args:
        infos: ``[B]`` this rank's ``RewardResult.info`` of the responses used for the update.
        dist: the run's ranks (every rank must call this, in the same step).

    Returns:
        ``{"reward/<key>": mean, "reward/<key>/<value>": fraction}``, sorted by name.
    """
    sums: defaultdict[Entry, float] = defaultdict(float)
    # ("num", key) or ("str", key): how many responses hold the key as a number / a string
    counts: defaultdict[Entry, int] = defaultdict(int)
    for info in infos:
        for e in _entries(info):
            if e[0] == "num":
                sums[e] += float(info[e[1]])
                counts[e] += 1
            else:
                sums[e] += 1
                counts[e[:2]] += 1
    names = _agreed(set(sums), dist)
    labels = Counter(e[1] for e in names if e[0] == "str")
    names = [e for e in names if e[0] == "num" or labels[e[1]] <= MAX_LABELS]
    if not names:
        return {}
    totals = dist.sum([sums.get(e, 0.0) for e in names] + [counts.get(e[:2], 0) for e in names])
    out = {}
    for i, e in enumerate(names):
        n = totals[len(names) + i]
        if n > 0:
            out["reward/" + "/".join(e[1:])] = totals[i] / n
    return dict(sorted(out.items()))
