"""The vLLM engine: a ``vllm.LLM`` colocated in the training process, synced after each step.

Colocated means the engine lives in the trainer's own process and memory: no server, no copy
of the weights over a socket. Three choices follow from that:

- The engine core runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``). The weights
  are handed to it as the trainer's tensors, one at a time, which a separate engine process
  could not receive. It also means no ``if __name__ == "__main__"`` guard is needed.
- The engine loads a checkpoint once at start (the one the trainer loaded, or the given
  model saved to a temporary directory) and then receives the trainer's parameters from
  :meth:`VLLMEngine.sync_weights` at start, after a resume and after every step. (vLLM's
  ``load_format="dummy"`` would skip the first load, but it also randomises buffers that no
  checkpoint holds, such as the rotary cos/sin cache, and a weight reload does not restore
  them: the engine then samples from a wrong model.) The weights go through
  vLLM's ``reload_weights`` (not the model's ``load_weights``): backends repack weights into
  kernel layouts after loading (the CPU backend does), and reloading runs the checkpoint-
  format loader and that repacking again. The prefix cache is reset after each sync, since
  cached prompt states were computed with the old weights.
- ``gpu_memory_utilization`` is the share of device memory the engine may take for weights
  and KV cache, leaving the rest to training (on vLLM's CPU backend, the share of host
  memory). With ``sleep`` the engine frees its KV cache and offloads its weights between
  rollouts (vLLM's sleep mode, GPU only), so the update gets that memory back.

Sampling semantics are those of :class:`~entropyrl.rollout.engine.SamplingParams`: temperature
and nucleus top-p, top-k off, no penalties, stop at the tokenizer's end-of-sequence token or
after ``max_new_tokens``. Each prompt's request gets its own seed, drawn from torch's global
generator (which the trainer seeds per step), so runs are reproducible and the ``n`` samples
of a prompt differ (vLLM seeds the ``n`` children of a request with ``seed + index``).

The rollout carries vLLM's log-probs of the sampled tokens, *processed* (``logprobs_mode=
"processed_logprobs"``): computed from the logits after temperature (and, with ``top_p < 1``,
renormalised over the nucleus), i.e. the distribution the token was drawn from. The trainer
compares them with its own log-probs (``rollout/logprob_gap_*``) and may correct for the gap
(truncated importance sampling, ``loss.tis_cap``).
"""

from __future__ import annotations

import gc
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from entropyrl.rollout.batch import Rollout
from entropyrl.rollout.engine import SamplingParams

Weights = Iterable[tuple[str, torch.Tensor]]


def vllm_available() -> bool:
    """Whether ``vllm`` can be imported in this environment."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def own_parameters(model: Any) -> Weights:
    """``(name, tensor)`` of an unsharded model, in checkpoint names (a DDP wrapper removed)."""
    inner = getattr(model, "module", model)
    for name, p in inner.named_parameters():
        yield name, p.detach()


class VLLMEngine:
    """Rollouts with a colocated ``vllm.LLM`` that receives the trainer's weights.

    Args:
        model: the trained causal LM (its parameters are loaded by every :meth:`sync_weights`,
            the first one at start).
        tokenizer: its tokenizer (eos set; pad falls back to eos).
        source: a Hugging Face checkpoint (directory or hub id) of the same architecture and
            tokenizer that vLLM loads at start; None = save ``model`` (unsharded) and
            ``tokenizer`` to a temporary directory and load that.
        gpu_memory_utilization: share of device memory (host memory on the CPU backend) the
            engine reserves for weights and KV cache.
        max_model_len: longest prompt + response the engine serves; None = the model's own
            limit (``max_position_embeddings``).
        dtype: the engine's weight dtype (``float32``, ``bfloat16`` or ``auto``).
        seed: the engine's own seed (per-request seeds decide the samples).
        device: where the returned rollout's tensors go (the trainer's device).
        gather: yields the trainer's full parameters ``(name, tensor)``; the default reads an
            unsharded model. Under FSDP it is :func:`entropyrl.distributed.full_parameters`
            (a collective: every rank calls :meth:`sync_weights`).
        sleep: release the KV cache and offload the weights between rollouts (GPU only).
        external_launcher: each process of a multi-process launch drives its own engine
            (vLLM's ``external_launcher`` executor) instead of vLLM starting workers. The
            engine joins the launch's process group (tensor parallel 1: every rank is a replica
            that samples its own prompts) and :meth:`close` leaves that group in place.
        enforce_eager: no CUDA graphs / compilation (always on for the CPU backend here:
            compiling costs more than it saves for small models).
    """

    def __init__(self, model: Any, tokenizer: Any, *, source: str | None = None,
                 gpu_memory_utilization: float = 0.3,
                 max_model_len: int | None = None, dtype: str = "auto", seed: int = 0,
                 device: torch.device | str = "cpu",
                 gather: Callable[[Any], Weights] | None = None, sleep: bool = False,
                 external_launcher: bool = False, enforce_eager: bool = False):
        if not 0 < gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization: expected a value in (0, 1], got "
                             f"{gpu_memory_utilization}")
        # The weights are passed as in-memory tensors: the engine core must be in-process.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        from vllm import LLM

        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self._gather = gather or own_parameters
        self._sleep = sleep
        self._asleep = False
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        if source is None:
            self._dir = tempfile.TemporaryDirectory(prefix="entropyrl-vllm-")
            _save(model, tokenizer, self._dir.name)
            source = self._dir.name
        kwargs: dict[str, Any] = {}
        if external_launcher:
            # Every rank runs its own engine (tensor parallel 1): vLLM joins the launch's
            # process group (RANK, LOCAL_RANK, MASTER_ADDR/PORT) and each rank is a replica of
            # its own ("external data parallel"), sampling its own prompts.
            kwargs["distributed_executor_backend"] = "external_launcher"
        # A single process's engine starts a process group of its own; under a launch it joins
        # the trainer's, which :meth:`close` must leave in place.
        self._owns_process_group = not (torch.distributed.is_available()
                                        and torch.distributed.is_initialized())
        self.llm: Any = LLM(
            model=source,
            dtype=dtype,
            seed=seed,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            logprobs_mode="processed_logprobs",
            generation_config="vllm",  # no sampling defaults from a generation_config.json
            enable_prefix_caching=True,
            enable_sleep_mode=sleep,
            enforce_eager=enforce_eager,
            **kwargs,
        )
        self.sync_weights(model)

    @torch.no_grad()
    def generate(self, prompts: list[str], n: int, sampling: SamplingParams) -> Rollout:
        """``n`` responses per prompt (rows ``i·n … i·n + n − 1`` answer prompt ``i``)."""
        from vllm import SamplingParams as VLLMSamplingParams

        self._wake()
        tok = self.tokenizer
        eos = tok.eos_token_id
        pad = tok.pad_token_id if tok.pad_token_id is not None else eos
        encoded = tok(prompts, add_special_tokens=False)["input_ids"]
        # One seed per prompt from torch's generator; vLLM gives child j of a request seed + j.
        base = int(torch.randint(0, 2**31 - 1 - n * len(prompts), ()).item())
        greedy = sampling.greedy
        params = [
            VLLMSamplingParams(
                n=n,
                temperature=0.0 if greedy else sampling.temperature,
                top_p=1.0 if greedy else sampling.top_p,
                top_k=0,  # off
                max_tokens=sampling.max_new_tokens,
                seed=base + i * n,
                stop_token_ids=[eos],
                logprobs=0,  # the sampled token's log-prob only
                detokenize=False,  # texts are decoded below, as the HF engine decodes them
            )
            for i in range(len(prompts))
        ]
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in encoded], params,
                                    use_tqdm=False)
        self._fall_asleep()
        rows: list[list[int]] = []
        responses: list[list[int]] = []
        logprobs: list[list[float]] = []
        for ids, out in zip(encoded, outputs, strict=True):
            for c in sorted(out.outputs, key=lambda c: c.index):
                tokens = list(c.token_ids)
                rows.append(ids)
                responses.append(tokens)
                logprobs.append(_sampled_logprobs(tokens, c.logprobs))
        cut = [r[: r.index(eos) + 1] if eos in r else r for r in responses]
        texts = tok.batch_decode([[t for t in r if t != eos] for r in cut],
                                 skip_special_tokens=True)
        groups = [i // n for i in range(len(rows))]
        # Greedy decoding draws from no distribution; its log-probs are not reported.
        return Rollout.from_token_lists(rows, cut, texts=texts, group_ids=groups, eos_id=eos,
                                        pad_id=pad, device=self.device,
                                        sampler_logprobs=None if greedy else logprobs)

    @torch.no_grad()
    def sync_weights(self, model: Any) -> None:
        """Load ``model``'s current parameters into the engine; reset the prefix cache.

        The parameters stream one at a time from ``gather`` into vLLM's in-place reload, so
        the sync holds at most one extra full parameter.
        """
        self._wake()
        weights = _with_tied_names(model, self._gather(model))
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        """Shut the engine down and release its memory (another engine may start after)."""
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        self.llm = None
        engine = getattr(llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        with _keeping_process_group(not self._owns_process_group):
            if core is not None and hasattr(core, "shutdown"):
                core.shutdown()
            del llm, engine, core
            gc.collect()
            from vllm.distributed import parallel_state

            parallel_state.destroy_model_parallel()
            parallel_state.destroy_distributed_environment()
        if self._dir is not None:
            self._dir.cleanup()

    def _wake(self) -> None:
        if self._asleep:
            self.llm.wake_up()
            self._asleep = False

    def _fall_asleep(self) -> None:
        if self._sleep:
            # Level 1: weights offloaded to host memory, KV cache dropped.
            self.llm.sleep(level=1)
            self._asleep = True


@contextmanager
def _keeping_process_group(keep: bool) -> Iterator[None]:
    """While active (if ``keep``), vLLM's teardown leaves torch's default process group alone.

    vLLM's ``destroy_distributed_environment`` (which the in-process engine core's shutdown
    calls too) releases vLLM's own world group and then destroys torch's default process
    group. Under a multi-process launch that group is the trainer's (accelerate's), which the
    engine joined rather than created: destroying it makes the ranks' next collective fail
    ("Default process group has not been initialized"). Here only vLLM's world group (a group
    of its own over the same ranks) is released.
    """
    if not keep:
        yield
        return
    from vllm.distributed import parallel_state

    def release_world_group() -> None:
        world = parallel_state._WORLD
        if world is not None:
            world.destroy()
        parallel_state._WORLD = None
        parallel_state._NODE_COUNT = None

    real = parallel_state.destroy_distributed_environment
    parallel_state.destroy_distributed_environment = release_world_group
    try:
        yield
    finally:
        parallel_state.destroy_distributed_environment = real


def _sampled_logprobs(tokens: list[int], per_position: Any) -> list[float]:
    """The log-prob of each sampled token from vLLM's per-position ``{token: Logprob}``."""
    if per_position is None:
        raise RuntimeError("vLLM returned no log-probs; the request asked for logprobs=0")
    return [float(step[t].logprob) for t, step in zip(tokens, per_position, strict=True)]


def _with_tied_names(model: Any, weights: Weights) -> Iterator[tuple[str, torch.Tensor]]:
    """``weights``, each tied parameter also under its other names (e.g. ``lm_head.weight``).

    ``named_parameters`` lists a tied tensor once (as ``model.embed_tokens.weight``). vLLM
    ties the LM head to the embedding too, but its reload treats a module that received no
    tensor as not reloaded and puts its previous kernel tensors back, so a head that is not
    named keeps the old weights and the engine samples from a mix of old and new parameters.
    """
    inner = getattr(model, "module", model)
    first: dict[int, str] = {}
    aliases: dict[str, list[str]] = {}
    for name, p in inner.named_parameters(remove_duplicate=False):
        if id(p) in first:
            aliases.setdefault(first[id(p)], []).append(name)
        else:
            first[id(p)] = name
    for name, tensor in weights:
        yield name, tensor
        for alias in aliases.get(name, ()):
            yield alias, tensor


def _save(model: Any, tokenizer: Any, directory: str) -> None:
    """A checkpoint of an unsharded model and its tokenizer, for vLLM to start from."""
    inner = getattr(model, "module", model)
    if not getattr(inner.config, "architectures", None):
        inner.config.architectures = [type(inner).__name__]
    inner.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
