"""Reward info as ``reward/*`` metrics: numbers averaged, labels as fractions, ranks agreeing."""

import math
import os

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from entropyrl.distributed import Dist
from entropyrl.train.reward_info import MAX_LABELS, reward_info_metrics


def test_numbers_are_averaged_and_labels_counted_over_the_responses_that_report_them():
    infos = [
        {"status": "ok", "passed": 3, "total": 3, "passed_frac": 1.0},
        {"status": "wrong", "passed": 1, "total": 3, "passed_frac": 1 / 3},
        {"status": "no_code"},  # no numbers: not in their means
        {"status": "wrong", "passed": 0, "total": 2, "passed_frac": 0.0, "fast": True},
        {},
    ]
    got = reward_info_metrics(infos, Dist.single())
    assert got == pytest.approx({
        "reward/fast": 1.0,  # a bool is a number: the share of True among those reporting it
        "reward/passed": 4 / 3, "reward/passed_frac": (1 + 1 / 3) / 3, "reward/total": 8 / 3,
        "reward/status/no_code": 1 / 4, "reward/status/ok": 1 / 4, "reward/status/wrong": 2 / 4,
    }, rel=1e-12)
    assert list(got) == sorted(got)


def test_what_is_not_a_number_or_a_label_is_ignored():
    infos = [{"a": None, "b": [1], "c": float("nan"), "d": math.inf, "e": 2.5},
             {"c": 1.0, "e": 0.5}]
    assert reward_info_metrics(infos, Dist.single()) == {"reward/c": 1.0, "reward/e": 1.5}
    assert reward_info_metrics([{}, {}], Dist.single()) == {}
    assert reward_info_metrics([], Dist.single()) == {}


def test_free_text_is_not_a_label():
    many = [{"detail": f"expected {i}", "status": "wrong"} for i in range(MAX_LABELS + 1)]
    assert set(reward_info_metrics(many, Dist.single())) == {"reward/status/wrong"}
    few = many[:MAX_LABELS]
    assert len(reward_info_metrics(few, Dist.single())) == MAX_LABELS + 1


def test_a_key_holding_numbers_and_labels_gives_both():
    got = reward_info_metrics([{"x": 2}, {"x": "high"}, {"x": 4}], Dist.single())
    assert got == {"reward/x": 3.0, "reward/x/high": 1.0}


# Rank 0 sees a timeout and numbers rank 1 never reports; rank 1 a status rank 0 never sees.
RANK_INFOS = [
    [{"status": "ok", "passed": 2}, {"status": "timeout", "passed": 0}],
    [{"status": "syntax"}, {"status": "ok"}, {"status": "ok"}, {"other": 7.0}],
]


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    out[rank] = reward_info_metrics(RANK_INFOS[rank], Dist.from_process_group())
    dist.barrier()
    os._exit(0)  # skip gloo's teardown (see test_distributed_update.py)


@pytest.mark.distributed
def test_two_ranks_with_different_keys_agree_with_one_process():
    from spawn_helpers import free_port

    want = reward_info_metrics(RANK_INFOS[0] + RANK_INFOS[1], Dist.single())
    assert set(want) == {"reward/other", "reward/passed", "reward/status/ok",
                         "reward/status/syntax", "reward/status/timeout"}
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_worker, args=(2, free_port(), out), nprocs=2, join=True)
        got = [dict(out[0]), dict(out[1])]
    assert got[0] == got[1] == pytest.approx(want, rel=1e-12)


def test_collect_logs_the_info_of_the_kept_responses_only():
    """Dynamic sampling drops equal-reward groups; their info must not reach the metrics."""
    from test_wiring import FixedEngine

    from entropyrl.config import load_config
    from entropyrl.rewards.result import RewardResult
    from entropyrl.tasks import PromptSampler
    from entropyrl.train.collect import collect

    rounds = iter([
        [(1, "ok"), (0, "wrong"), (0, "timeout"), (0, "timeout")],  # group 2 equal: dropped
        [(0, "crash"), (0, "crash"), (1, "ok"), (0, "wrong")],  # group 1 equal: dropped
    ])

    def score(texts, rows):
        return [RewardResult(float(s), bool(s), {"status": st, "n": len(st)})
                for s, st in next(rounds)]

    cfg = load_config("testbed/grpo", ["rollout.n_prompts=2", "rollout.group_size=2",
                                       "update.mini_batch_size=4", "update.micro_batch_size=4",
                                       "rollout.max_new_tokens=4", "rollout.dynamic_sampling=true",
                                       "rollout.max_gen_batches=3"])
    got = collect(FixedEngine([[7, 2]]), [{"prompt": "p"}] * 4, PromptSampler(4, 0), score,
                  rollout=cfg.rollout, reward=cfg.reward, dist=Dist.single(), pad_token_id=0)
    assert got.metrics["train/gen_batches"] == 2
    assert {k: v for k, v in got.metrics.items() if k.startswith("reward/")} == {
        "reward/n": 3.5, "reward/status/ok": 0.5, "reward/status/wrong": 0.5}
