"""The vLLM engine's sleep mode wiring, against a recording stand-in for ``vllm.LLM``.

vLLM's sleep mode runs on a GPU only (the CPU build refuses ``enable_sleep_mode``), so these
tests check what the engine asks of vLLM, in which order: asleep from the end of a rollout
until the next weight sync or rollout (the update gets the memory), awake for both, and never
a sleep or wake call when sleep mode is off. They need no vLLM and run in the default suite.
"""

import sys
import types
from types import SimpleNamespace
from typing import ClassVar

import pytest
import torch

from entropyrl import testbed
from entropyrl.rollout import SamplingParams


class RecordingLLM:
    """Stands in for ``vllm.LLM``: records calls, answers ``generate`` with fixed tokens."""

    calls: ClassVar[list[tuple]] = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.asleep = False
        RecordingLLM.calls = [("init", kwargs["enable_sleep_mode"])]

    def sleep(self, level):
        assert not self.asleep, "sleep() while asleep"
        self.asleep = True
        self.calls.append(("sleep", level))

    def wake_up(self):
        assert self.asleep, "wake_up() while awake"
        self.asleep = False
        self.calls.append(("wake_up",))

    def collective_rpc(self, method, kwargs):
        assert not self.asleep, "weights reloaded into a sleeping engine"
        names = [name for name, _ in kwargs["weights_iterator"]]
        self.calls.append((method, len(names)))

    def reset_prefix_cache(self):
        self.calls.append(("reset_prefix_cache",))

    def generate(self, requests, params, use_tqdm):
        assert not self.asleep, "generate() on a sleeping engine"
        self.calls.append(("generate", len(requests)))
        outputs = []
        for p in params:
            tokens = [5, 6]
            logprobs = [{t: SimpleNamespace(logprob=-0.5)} for t in tokens]
            outputs.append(SimpleNamespace(outputs=[
                SimpleNamespace(index=j, token_ids=tokens, logprobs=logprobs)
                for j in range(p.n)]))
        return outputs


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM = RecordingLLM
    module.SamplingParams = lambda **kw: SimpleNamespace(**kw)
    monkeypatch.setitem(sys.modules, "vllm", module)
    return module


def make_engine(sleep: bool):
    from transformers import Qwen2ForCausalLM

    from entropyrl.rollout.vllm import VLLMEngine

    tokenizer = testbed.build_tokenizer()
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(testbed.micro_config(len(tokenizer)))
    return VLLMEngine(model, tokenizer, source="unused", sleep=sleep), model


def names(calls):
    return [c[0] for c in calls]


def test_asleep_between_rollout_and_sync(fake_vllm):
    engine, model = make_engine(sleep=True)
    start = RecordingLLM.calls
    assert start[0] == ("init", True)
    assert names(start[1:]) == ["reload_weights", "reset_prefix_cache"]  # the first sync
    n_params = start[1][1]

    RecordingLLM.calls = []
    rollout = engine.generate(["1+1=", "2+2="], 2, SamplingParams(max_new_tokens=4))
    assert rollout.response_ids.shape[0] == 4
    # The rollout ends with the engine asleep (level 1: weights to host memory, KV cache
    # dropped), so the update that follows has that memory.
    assert RecordingLLM.calls == [("generate", 2), ("sleep", 1)]
    assert engine.llm.asleep

    RecordingLLM.calls = []
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    engine.sync_weights(model)
    # Woken before the new weights go in, and left awake for the next rollout's start.
    assert RecordingLLM.calls == [("wake_up",), ("reload_weights", n_params),
                                  ("reset_prefix_cache",)]

    RecordingLLM.calls = []
    engine.generate(["3+3="], 1, SamplingParams(max_new_tokens=4))
    assert RecordingLLM.calls == [("generate", 1), ("sleep", 1)]
    # A rollout straight after another (validation) wakes the engine first.
    RecordingLLM.calls = []
    engine.generate(["4+4="], 1, SamplingParams(max_new_tokens=4, greedy=True))
    assert RecordingLLM.calls == [("wake_up",), ("generate", 1), ("sleep", 1)]


def test_no_sleep_calls_when_off(fake_vllm):
    engine, model = make_engine(sleep=False)
    assert RecordingLLM.calls[0] == ("init", False)
    RecordingLLM.calls = []
    engine.generate(["1+1="], 2, SamplingParams(max_new_tokens=4))
    engine.sync_weights(model)
    engine.generate(["1+1="], 2, SamplingParams(max_new_tokens=4))
    assert "sleep" not in names(RecordingLLM.calls)
    assert "wake_up" not in names(RecordingLLM.calls)
