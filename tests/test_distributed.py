"""Collectives go through ``Dist``: every tensor a backend receives was placed on the group's
device by ``Dist.put`` (NCCL accepts only GPU tensors), and ``Dist`` is the only importer of
``torch.distributed`` in the library."""

import re
from pathlib import Path

import torch

from entropyrl.covariance import SelectionPart, select_clip_cov, select_kl_cov
from entropyrl.distributed import Dist
from entropyrl.losses import ClipCovConfig, KLCovConfig
from entropyrl.train.batch_metrics import StepBatch, entropy_metrics, step_metrics
from entropyrl.train.update import global_denominators

SRC = Path(__file__).resolve().parents[1] / "src" / "entropyrl"


class TwinBackend:
    """Two ranks holding identical data; records every tensor it receives."""

    def __init__(self):
        self.received = []

    def all_reduce(self, t, op):
        self.received.append(t)
        if op == "sum":
            t.mul_(2)

    def all_gather(self, out, t):
        self.received.append(t)
        for o in out:
            o.copy_(t)

    def barrier(self):
        pass


class RecordingDist(Dist):
    """Remembers the tensors that ``put`` produced."""

    def __init__(self):
        self.backend = TwinBackend()
        super().__init__(2, 0, "cpu", self.backend)
        self.placed = []

    def put(self, t):
        y = super().put(t)
        self.placed.append(y)
        return y


def test_every_collective_receives_a_tensor_placed_on_the_group_device():
    torch.manual_seed(0)
    lp, adv = -torch.rand(4, 7) * 3, torch.randn(4, 7)
    mask = torch.rand(4, 7) > 0.2
    parts = [SelectionPart(lp[:2], lp[:2], adv[:2], mask[:2]),
             SelectionPart(lp[2:], lp[2:], adv[2:], mask[2:])]
    dist = RecordingDist()
    kl = select_kl_cov(parts, KLCovConfig(ratio=0.1), dist=dist)
    select_clip_cov(parts, ClipCovConfig(ratio=0.1, cov_low=-10, cov_high=10), dist=dist)
    batch = StepBatch(mask, lp, torch.rand(4, 7), adv, torch.rand(4), torch.rand(4) > 0.5,
                      torch.zeros(4, dtype=torch.bool), torch.arange(4) // 2)
    step_metrics(batch, dist)
    entropy_metrics(torch.rand(4, 7), mask, dist)
    global_denominators(mask, dist)
    dist.sum([1.0]), dist.min([1.0]), dist.max([1.0]), dist.counts(3)
    received = dist.backend.received
    assert len(received) > 10
    placed = {id(t) for t in dist.placed}
    assert all(id(t) in placed and t.device == dist.device for t in received)
    # Two identical ranks: twice the tokens, and the selection is the same on both.
    assert kl.n_tokens == 2 * int(mask.sum())


def test_put_moves_to_the_group_device():
    dist = Dist(2, 1, "meta", TwinBackend())
    y = dist.put(torch.ones(3))
    assert y.device.type == "meta" and y.shape == (3,)


def test_single_process_collectives_are_the_identity():
    dist = Dist.single()
    t = torch.arange(3.0)
    assert dist.all_reduce(t) is t and dist.gather_rows(t) is t
    assert dist.sum([1.0, 2.0]) == [1.0, 2.0] and dist.counts(5) == (0, 5)


def test_only_the_distributed_module_imports_torch_distributed():
    users = sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
                   if re.search(r"^\s*(import|from) torch\.distributed", p.read_text(), re.M))
    assert users == ["distributed.py"]
