"""``EntropyGRPOTrainer``: TRL's ``GRPOTrainer`` with entropyrl's loss, selection and control.

What changes against ``GRPOTrainer`` (everything else — generation, rewards, advantages,
buffering, logging, checkpoints — is TRL's):

1. **When a generation batch is produced** (``_generate_and_score_completions``, training
   only, before TRL shuffles it and cuts it into ``steps_per_generation`` chunks):
   a no-grad forward scores every response token (log π_old and, when the diagnostics or the
   controller need it, the entropy); the Clip-Cov / KL-Cov selection is made once over the
   whole generation batch of all ranks (:mod:`entropyrl.covariance`) and stored per row as
   ``entropyrl_selected`` ``[B, T]``, so every chunk's loss uses its own slice and the
   selected set does not depend on the split; the optimizer-step denominators are stored as
   ``entropyrl_n_tokens`` / ``entropyrl_n_seqs``; the ``dyn/*`` diagnostics and the
   controller's reading are taken on the same batch.
2. **The loss of each chunk** (``_compute_loss``) is
   :func:`entropyrl.losses.compute_objective` with TRL's sequence advantages broadcast to the
   tokens and TRL's ``loss_type`` mapped to an aggregation mode (config.AGGREGATION).

Shapes: ``B`` rows of the local generation batch (or chunk), ``T`` completion tokens (padded).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from trl import GRPOTrainer

from entropyrl import dynamics
from entropyrl.covariance import SelectionPart, select_clip_cov, select_kl_cov
from entropyrl.distributed import Dist
from entropyrl.integrations.trl.compat import (
    BATCH_KEYS,
    check_trl,
    incompatibility_message,
    trl_version,
)
from entropyrl.integrations.trl.config import EntropyGRPOConfig, control_config, loss_config
from entropyrl.losses import Denominators, LossConfig, Objective, compute_objective
from entropyrl.train.entropy_control import EntropyControl
from entropyrl.train.update import derive_seed

# The keys logged once per generation batch (docs/trl.md gives each formula).
DIAGNOSTIC_KEYS: tuple[str, ...] = (
    "train/entropy", "dyn/cov_npg", "dyn/cov_pg",
    *(f"dyn/cov_{k}" for k in dynamics.SKEW_KEYS), "dyn/cov_response", "dyn/cov_response_pg",
)
SELECTION_KEYS: tuple[str, ...] = (
    "dyn/selected_frac", "dyn/candidate_frac", "dyn/n_selected", "dyn/n_tokens",
)
CONTROL_KEYS: tuple[str, ...] = (
    "control/target", "control/reference", "control/error", "control/actuator_value",
    "control/integral",
)

SELECTED_KEY = "entropyrl_selected"
N_TOKENS_KEY = "entropyrl_n_tokens"
N_SEQS_KEY = "entropyrl_n_seqs"


class EntropyGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` whose loss is entropyrl's (PPO clip, Clip-Cov or KL-Cov).

    Takes the same arguments as ``trl.GRPOTrainer``; ``args`` must be an
    :class:`~entropyrl.integrations.trl.EntropyGRPOConfig`.

    Attributes:
        last_objective: the :class:`~entropyrl.losses.Objective` of the last chunk (per-token
            loss and its diagnostics), for inspection and tests.
        last_selection: the generation batch's selection mask ``[B, T]`` (or None).
    """

    def __init__(self, *args: Any, **kwargs: Any):
        problems = check_trl()
        if problems:
            raise RuntimeError(incompatibility_message(problems, trl_version()))
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, EntropyGRPOConfig):
            raise TypeError("args: EntropyGRPOTrainer needs an EntropyGRPOConfig, got "
                            f"{type(self.args).__name__}")
        self.entropy_args: EntropyGRPOConfig = self.args
        self.base_loss: LossConfig = loss_config(self.args)
        self.active_loss: LossConfig = self.base_loss
        self.dist = Dist.from_accelerator(self.accelerator)
        self.generations = 0
        self.last_objective: Objective | None = None
        self.last_selection: torch.Tensor | None = None
        self.controller = EntropyControl(control_config(self.args), self.base_loss, 1, {})

    def _training(self) -> bool:
        """Whether the policy is in training mode (TRL's test for train vs eval batches)."""
        return bool(getattr(self.model, "training", False))

    def _steps_per_generation(self) -> int:
        """Chunks per generation batch (``GRPOConfig.__post_init__`` always sets it)."""
        return int(self.entropy_args.steps_per_generation or 1)

    # -- once per generation batch ---------------------------------------------------------

    def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
        batch = super()._generate_and_score_completions(inputs)
        missing = [k for k in BATCH_KEYS if k not in batch]
        if missing:
            raise RuntimeError(incompatibility_message(
                [f"_generate_and_score_completions no longer returns {missing}"], trl_version()))
        if self._training():
            self._prepare_generation_batch(batch)
        return batch

    @torch.no_grad()
    def _prepare_generation_batch(self, batch: dict[str, Any]) -> None:
        """Selection, denominators, diagnostics and control for one generation batch."""
        args = self.entropy_args
        self.generations += 1
        self.active_loss = self.controller.loss_for_step()
        mask = _valid(batch)
        adv = _token_advantages(batch["advantages"], mask)
        need_entropy = args.entropy_diagnostics or self.controller.enabled
        selects = self.active_loss.selection is not None and (
            args.selection_scope == "generation_batch")
        old = batch.get("old_per_token_logps")
        logps, entropy = None, None
        if need_entropy or (selects and old is None):
            logps, entropy = self._score(batch, with_entropy=need_entropy)
        logps = logps if logps is not None else old
        metrics: dict[str, float] = {}
        if selects:
            assert logps is not None
            part = SelectionPart(logps.float(), (old if old is not None else logps).float(),
                                 adv, mask)
            gen = torch.Generator().manual_seed(
                derive_seed(args.seed, self.state.global_step, self._step))
            if self.active_loss.selection == "clip_cov":
                sel = select_clip_cov([part], self.active_loss.clip_cov, generator=gen,
                                      dist=self.dist)
            else:
                sel = select_kl_cov([part], self.active_loss.kl_cov, dist=self.dist)
            batch[SELECTED_KEY] = sel.masks[0]
            self.last_selection = sel.masks[0]
            n = max(sel.n_tokens, 1)
            metrics["dyn/selected_frac"] = sel.n_selected / n
            metrics["dyn/candidate_frac"] = sel.n_candidates / n
            metrics["dyn/n_selected"] = float(sel.n_selected)
            metrics["dyn/n_tokens"] = float(sel.n_tokens)
        den = self._step_denominators(mask)
        device = mask.device
        batch[N_TOKENS_KEY] = torch.tensor(den.n_tokens, device=device)
        batch[N_SEQS_KEY] = torch.tensor(den.n_seqs, device=device)
        if entropy is not None:
            total = self.dist.sum([float((entropy.float() * mask).sum()), float(mask.sum())])
            metrics["train/entropy"] = total[0] / max(total[1], 1.0)
        if args.entropy_diagnostics and logps is not None:
            metrics.update(self._diagnostics(logps.float(), adv, mask))
        if self.controller.enabled:
            self.controller.steps = self._planned_generations()  # known once training starts
            metrics.update(self.controller.observe(self.generations, metrics))
        for key, value in metrics.items():
            self._metrics["train"][key].append(value)

    def _score(self, batch: dict[str, Any], *, with_entropy: bool) -> tuple[torch.Tensor,
                                                                            torch.Tensor | None]:
        """Log-probs (and entropies) ``[B, T]`` of the completions under the current policy."""
        completion_ids = batch["completion_ids"]
        input_ids = torch.cat([batch["prompt_ids"], completion_ids], dim=1)
        attention_mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
        logps, entropy, _ = self._get_per_token_logps_and_entropies(
            self.model, input_ids, attention_mask, completion_ids.size(1),
            batch_size=self.args.per_device_train_batch_size, compute_entropy=with_entropy)
        return logps, entropy

    def _step_denominators(self, mask: torch.Tensor) -> Denominators:
        """Token and sequence counts of one optimizer step, over all ranks.

        An optimizer step accumulates ``gradient_accumulation_steps`` chunks of
        ``1/steps_per_generation`` of the generation batch: the counts are the generation
        batch's times ``GA / steps_per_generation`` — exact when a step consumes whole
        generation batches (TRL's default ``steps_per_generation = GA``), the expected count
        otherwise (as TRL's own ``dapo`` normaliser).
        """
        local = Denominators.of(mask)
        n_tokens, n_seqs = self.dist.sum([local.n_tokens, local.n_seqs])
        scale = self.args.gradient_accumulation_steps / self._steps_per_generation()
        return Denominators(round(n_tokens * scale), round(n_seqs * scale))

    def _diagnostics(self, logps: torch.Tensor, adv: torch.Tensor,
                     mask: torch.Tensor) -> dict[str, float]:
        """``dyn/*`` of the generation batch of all ranks (log π_old, token advantages)."""
        rows = torch.arange(mask.shape[0], device=mask.device) + self.dist.rank * mask.shape[0]
        groups = rows // int(self.entropy_args.num_generations or 1)
        if self.dist.world > 1:
            logps, adv = self.dist.gather_rows(logps), self.dist.gather_rows(adv)
            mask, groups = self.dist.gather_rows(mask), self.dist.gather_rows(groups)
        cov = dynamics.batch_covariances(logps, adv, mask)
        out = {"dyn/cov_npg": cov.cov_npg, "dyn/cov_pg": cov.cov_pg}
        out.update({f"dyn/cov_{k}": v for k, v in dynamics.skew_table(logps, adv, mask).items()})
        for form, key in (("npg", "dyn/cov_response"), ("pg", "dyn/cov_response_pg")):
            out[key] = dynamics.response_covariance(logps, adv, mask, groups,
                                                    form=form).mean  # type: ignore[arg-type]
        return out

    def _planned_generations(self) -> int:
        """Generation batches in the run (the anneal length of a scheduled target)."""
        per_gen = self._steps_per_generation() * self.num_iterations
        micro_steps = max(self.state.max_steps, 1) * self.args.gradient_accumulation_steps
        return max(1, math.ceil(micro_steps / per_gen))

    # -- every chunk -----------------------------------------------------------------------

    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        completion_ids = inputs["completion_ids"]
        input_ids = torch.cat([inputs["prompt_ids"], completion_ids], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        logps, entropies, _ = self._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, completion_ids.size(1), compute_entropy=True)
        mask = _valid(inputs)
        adv = _token_advantages(inputs["advantages"], mask)
        old = inputs.get("old_per_token_logps")
        # Without a stored π_old (on-policy, aligned steps) TRL uses the current values.
        old = logps.detach() if old is None else old
        training = self._training()
        loss_cfg = self.active_loss if training else self.base_loss
        selected = self._chunk_selection(inputs, loss_cfg, logps.detach().float(), old.float(),
                                         adv, mask, training)
        den = (Denominators(int(inputs[N_TOKENS_KEY]), int(inputs[N_SEQS_KEY]))
               if training and N_TOKENS_KEY in inputs else Denominators.of(mask))
        obj = compute_objective(
            loss_cfg, logps.float(), old.float(), adv, mask, selected=selected,
            entropy=entropies.float() if loss_cfg.entropy_coef != 0 else None,
            ref_logprobs=(inputs["ref_per_token_logps"].float() if loss_cfg.ref_kl_coef > 0
                          else None),
            denominators=den, norm_constant=float(self.entropy_args.max_completion_length or 1),
        )
        self.last_objective = obj
        self._log_chunk(obj, entropies, mask, "train" if training else "eval")
        # The loss is normalised by the counts of all ranks; data parallelism averages the
        # gradients over ranks, so the world size undoes that average.
        return obj.loss * self.accelerator.num_processes if training else obj.loss

    def _chunk_selection(self, inputs: dict[str, Any], loss_cfg: LossConfig,
                         logps: torch.Tensor, old: torch.Tensor, adv: torch.Tensor,
                         mask: torch.Tensor, training: bool) -> torch.Tensor | None:
        """This chunk's slice of the global selection, or a selection of the chunk alone."""
        if loss_cfg.selection is None:
            return None
        if training and SELECTED_KEY in inputs:
            return inputs[SELECTED_KEY]
        # micro_batch scope (and evaluation): the chunk's current log-probs, this rank only.
        part = SelectionPart(logps, old, adv, mask)
        if loss_cfg.selection == "clip_cov":
            gen = torch.Generator().manual_seed(
                derive_seed(self.args.seed, self.state.global_step, self._step, 1))
            return select_clip_cov([part], loss_cfg.clip_cov, generator=gen).masks[0]
        return select_kl_cov([part], loss_cfg.kl_cov).masks[0]

    def _log_chunk(self, obj: Objective, entropies: torch.Tensor, mask: torch.Tensor,
                   mode: str) -> None:
        """TRL's ``entropy`` and ``policy_loss`` keys and our ``loss/*`` diagnostics."""
        n = mask.sum().float()
        values = [(entropies.detach().float() * mask).sum(), n]
        keys = sorted(obj.metrics)
        values += [obj.metrics[k].float() * n for k in keys]
        totals = self.accelerator.reduce(torch.stack(values), reduction="sum")
        count = float(totals[1].clamp(min=1.0))
        self._metrics[mode]["entropy"].append(float(totals[0]) / count)
        self._metrics[mode]["policy_loss"].append(float(obj.metrics["policy_loss"]))
        for i, key in enumerate(keys):
            if key != "policy_loss":
                self._metrics[mode][f"loss/{key}"].append(float(totals[2 + i]) / count)


def _valid(batch: dict[str, Any]) -> torch.Tensor:
    """The loss mask ``[B, T]`` bool: completion tokens, minus tool output when present."""
    mask = batch["completion_mask"]
    if batch.get("tool_mask") is not None:
        mask = mask * batch["tool_mask"]
    return mask.bool()


def _token_advantages(advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """TRL's sequence advantages ``[B]`` broadcast to the tokens ``[B, T]`` (float32)."""
    adv = advantages.float()
    if adv.dim() == 1:
        adv = adv[:, None]
    return adv.expand(mask.shape).contiguous()

