"""The RL loop: rollout → reward → advantage → (old log-probs) → updates → ΔH → metrics.

``train(cfg, out_dir)`` runs a whole job on ``accelerate`` (one CPU process by default;
``accelerate launch --num_processes N`` for data parallelism), writes ``metrics.jsonl`` every
step, validates every ``eval.every`` steps, checkpoints, and resumes from the newest checkpoint
when restarted with the same output directory. Each step re-seeds its random generators from
``(seed, step, rank)``, so a resumed run reproduces an uninterrupted one exactly on CPU.
"""

from __future__ import annotations

import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from entropyrl import advantages as adv_lib
from entropyrl.batch_metrics import StepBatch, all_reduce_sum, entropy_metrics, step_metrics
from entropyrl.checkpoint import (
    latest_checkpoint,
    load_trainer_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from entropyrl.config import TrainConfig, to_dict
from entropyrl.errors import UserError
from entropyrl.evaluation import validate
from entropyrl.metrics import MetricsSink, truncate_metrics
from entropyrl.models import load_model_and_tokenizer
from entropyrl.policy import response_token_stats
from entropyrl.rewards import overlong_penalties
from entropyrl.rollout import Rollout, concat_rollouts, generate
from entropyrl.tasks import PromptSampler, TaskSet, load_tasks
from entropyrl.update import UpdateContext, derive_seed, update_on_batch


@dataclass
class Run:
    """Everything a training job holds between steps."""

    cfg: TrainConfig
    out_dir: Path
    accelerator: Any
    model: Any
    tokenizer: Any
    ref_model: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    tasks: TaskSet
    sampler: PromptSampler
    sink: MetricsSink | None
    step: int  # last completed step
    world: int
    rank: int
    group: Any

    @property
    def ctx(self) -> UpdateContext:
        """The view of the run the update needs."""
        return UpdateContext(self.cfg, self.model, self.optimizer, self.scheduler,
                             self.accelerator, self.world, self.group)


def train(
    cfg: TrainConfig, out_dir: Path, *, accelerator: Any = None, stop_after: int | None = None
) -> Path:
    """Run (or resume) a training job into ``out_dir``; returns ``out_dir``.

    ``stop_after`` stops after that step exactly as SIGINT/SIGTERM would (checkpoint, exit
    cleanly); running the same call again resumes.
    """
    run = setup(cfg, out_dir, accelerator)
    try:
        with _stop_signals() as stop, _progress(run) as advance:
            for step in range(run.step + 1, cfg.steps + 1):
                metrics: dict[str, Any] = {"step": step}
                if _validation_due(cfg, step):
                    metrics.update(run_validation(run, step))
                metrics.update(rl_step(run, step))
                run.step = step
                if run.sink is not None:
                    run.sink.write(metrics)
                advance(metrics)
                halt = stop.requested or (stop_after is not None and step >= stop_after)
                every = cfg.checkpoint_every
                if step == cfg.steps or halt or (every and step % every == 0):
                    save(run)
                if halt:
                    break
    finally:
        run.tasks.close()
        if run.sink is not None:
            run.sink.close()
    return out_dir


def rl_step(run: Run, step: int) -> dict[str, float]:
    """One rollout step: sample, score, estimate advantages, update, measure ΔH."""
    cfg = run.cfg
    t0 = time.perf_counter()
    torch.manual_seed(derive_seed(cfg.seed, step, run.rank, 17))
    batch, rewards, solved, m = collect_rollout(run)
    adv = adv_lib.compute_advantages(
        cfg.algorithm.advantage, rewards, batch.group_ids, batch.response_mask,
        gamma=cfg.algorithm.gamma,
    ).token_advantages
    t1 = time.perf_counter()
    old_lp, entropy, ref_lp = score_batch(run, batch, with_ref=run.ref_model is not None)
    t2 = time.perf_counter()
    m.update(step_metrics(StepBatch(batch.response_mask, old_lp, entropy, adv, rewards, solved,
                                    batch.truncated, batch.group_ids), run.group))
    m.update(update_on_batch(run.ctx, batch, old_lp, adv, ref_lp, step=step))
    t3 = time.perf_counter()
    _, after, _ = score_batch(run, batch, with_ref=False)
    before_h = m["train/entropy"]
    after_h = entropy_metrics(after, batch.response_mask, run.group)["train/entropy"]
    m["dyn/entropy_before"] = before_h
    m["dyn/entropy_after"] = after_h
    m["dyn/delta_entropy"] = after_h - before_h
    m["dyn/pred_delta_entropy"] = -m["dyn/cov_npg"]
    t4 = time.perf_counter()
    m["time/old_logprob_s"] = t2 - t1
    m["time/update_s"] = t3 - t2
    m["time/dynamics_s"] = t4 - t3
    m["time/step_s"] = t4 - t0
    return m


def collect_rollout(run: Run) -> tuple[Rollout, torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Generate and score; with dynamic sampling, keep mixed-reward groups and refill.

    Returns this rank's batch, its rewards (after shaping), which responses are verified
    correct, and the generation counters (summed over ranks). Every rank draws every round's
    prompts, generating only while its own batch is short, so the prompt sampler advances
    identically on all ranks.
    """
    cfg = run.cfg
    n_local = cfg.rollout.n_prompts // run.world
    g = cfg.rollout.group_size
    kept: list[Rollout] = []
    kept_rewards: list[torch.Tensor] = []
    kept_solved: list[torch.Tensor] = []
    n_kept, rounds, n_groups, n_mixed = 0, 0, 0, 0
    t_gen = t_rew = 0.0
    while rounds < cfg.rollout.max_gen_batches:
        if rounds and not all_reduce_sum([float(n_kept < n_local)], run.group)[0]:
            break  # every rank's batch is full
        rounds += 1
        idx = run.sampler.take(cfg.rollout.n_prompts)
        if n_kept == n_local:
            continue  # full here, short on another rank: keep the sampler in step
        rows = [run.tasks.train[i] for i in idx[run.rank * n_local : (run.rank + 1) * n_local]]
        t = time.perf_counter()
        roll = generate(run.accelerator.unwrap_model(run.model), run.tokenizer,
                        [r["prompt"] for r in rows], n=g, temperature=cfg.rollout.temperature,
                        top_p=cfg.rollout.top_p, max_new_tokens=cfg.rollout.max_new_tokens)
        t_gen += time.perf_counter() - t
        t = time.perf_counter()
        scores = run.tasks.score_batch(roll.texts, [rows[i // g] for i in range(len(roll))])
        rewards = torch.tensor(scores, dtype=torch.float32)
        solved = rewards >= 1.0  # before any shaping: accuracy counts verified answers only
        if cfg.reward.overlong_buffer > 0:
            rewards += torch.tensor(overlong_penalties(
                roll.response_mask.sum(1).tolist(), max_length=cfg.rollout.max_new_tokens,
                buffer=cfg.reward.overlong_buffer, factor=cfg.reward.overlong_factor,
            ), dtype=torch.float32)
        t_rew += time.perf_counter() - t
        per_group = rewards.view(-1, g)
        mixed = (per_group != per_group[:, :1]).any(dim=1)
        n_groups += len(rows)
        n_mixed += int(mixed.sum())
        if not cfg.rollout.dynamic_sampling:
            kept, kept_rewards, kept_solved, n_kept = [roll], [rewards], [solved], len(rows)
            break
        # Mixed groups first; on the last allowed round, top up with equal-reward groups
        # (zero advantage) so every step, and every rank, has the same batch size.
        last_round = rounds == cfg.rollout.max_gen_batches
        order = torch.cat([mixed.nonzero(), (~mixed).nonzero()]).squeeze(-1)
        take = (order if last_round else mixed.nonzero().squeeze(-1))[: n_local - n_kept]
        if len(take):
            rows_idx = (take[:, None] * g + torch.arange(g)).reshape(-1)
            kept.append(roll.select(rows_idx.to(roll.input_ids.device)))
            kept_rewards.append(rewards[rows_idx])
            kept_solved.append(solved[rows_idx])
            n_kept += len(take)
    batch = concat_rollouts(kept, run.tokenizer.pad_token_id)
    rewards = torch.cat(kept_rewards).to(batch.input_ids.device)
    n_tokens, n_groups_all, n_mixed_all = all_reduce_sum(
        [float(batch.response_mask.sum()), n_groups, n_mixed], run.group)
    metrics = {
        "train/mixed_group_frac": n_mixed_all / max(n_groups_all, 1),
        "train/gen_batches": rounds,
        "time/rollout_s": t_gen,
        "time/reward_s": t_rew,
        "time/tokens_per_s": n_tokens / max(t_gen, 1e-9),
    }
    return batch, rewards, torch.cat(kept_solved).to(rewards.device), metrics


@torch.no_grad()
def score_batch(
    run: Run, batch: Rollout, *, with_ref: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Log π and entropy ``[B, R]`` of the batch under the current model (and log π_ref)."""
    cfg = run.cfg
    lps, ents, refs = [], [], []
    model = run.accelerator.unwrap_model(run.model)
    for start in range(0, len(batch), cfg.update.micro_batch_size):
        sl = slice(start, start + cfg.update.micro_batch_size)
        args = (batch.input_ids[sl], batch.attention_mask[sl], batch.prompt_len)
        st = response_token_stats(model, *args, temperature=cfg.rollout.temperature,
                                  with_entropy=True)
        lps.append(st.logprobs)
        assert st.entropy is not None
        ents.append(st.entropy)
        if with_ref:
            refs.append(response_token_stats(run.ref_model, *args,
                                             temperature=cfg.rollout.temperature,
                                             with_entropy=False).logprobs)
    return torch.cat(lps), torch.cat(ents), torch.cat(refs) if with_ref else None


def run_validation(run: Run, step: int) -> dict[str, float]:
    """Validation metrics (main process), measured on the policy that samples this step."""
    if run.rank != 0:
        return {}
    cfg = run.cfg
    t = time.perf_counter()
    state = torch.get_rng_state()
    torch.manual_seed(derive_seed(cfg.seed, step, 991))
    out = validate(run.accelerator.unwrap_model(run.model), run.tokenizer, run.tasks.val,
                   run.tasks.score_batch, k=cfg.eval.k, temperature=cfg.eval.temperature,
                   max_new_tokens=cfg.eval.max_new_tokens, acc=cfg.eval.acc)
    torch.set_rng_state(state)
    out["time/eval_s"] = time.perf_counter() - t
    return out


def _validation_due(cfg: TrainConfig, step: int) -> bool:
    every = cfg.eval.every
    return every > 0 and ((step - 1) % every == 0 or step == cfg.steps)


def setup(cfg: TrainConfig, out_dir: Path, accelerator: Any = None) -> Run:
    """Load model, data and optimizer; resume from the newest checkpoint in ``out_dir``."""
    if accelerator is None:
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=cfg.model.device == "cpu" or not torch.cuda.is_available())
    world, rank = accelerator.num_processes, accelerator.process_index
    if cfg.rollout.n_prompts % world:
        raise UserError(f"rollout.n_prompts ({cfg.rollout.n_prompts}) must be divisible by "
                        f"the number of processes ({world}).")
    if cfg.update.mini_batch_size % (world * cfg.update.micro_batch_size):
        raise UserError(
            f"update.mini_batch_size ({cfg.update.mini_batch_size}) must be divisible by "
            f"processes x update.micro_batch_size ({world} x {cfg.update.micro_batch_size})."
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    resume = latest_checkpoint(out_dir)
    model, tokenizer = load_model_and_tokenizer(cfg.model, override_path=resume)
    ref_model = None
    if cfg.loss.ref_kl_coef > 0:
        ref_model, _ = load_model_and_tokenizer(cfg.model)
        ref_model.requires_grad_(False).eval()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.optim.lr, betas=(cfg.optim.beta1, cfg.optim.beta2),
        eps=cfg.optim.eps, weight_decay=cfg.optim.weight_decay,
    )
    warm = max(cfg.optim.warmup_steps, 0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda u: min(1.0, (u + 1) / warm) if warm else 1.0
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    tasks = load_tasks(cfg.data, cfg.reward, tokenizer)
    sampler = PromptSampler(len(tasks.train), cfg.seed)
    step = 0
    if resume is not None:
        state = load_trainer_state(resume)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.load_state_dict(state["sampler"])
        set_rng_state(state["rng"])
        step = int(state["step"])
    group = None
    if world > 1:
        import torch.distributed as dist

        group = dist.group.WORLD
    sink = None
    if accelerator.is_main_process:
        if step == 0:
            (out_dir / "metrics.jsonl").unlink(missing_ok=True)
        truncate_metrics(out_dir / "metrics.jsonl", step)
        (out_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        sink = MetricsSink(out_dir, cfg.sinks, cfg.name, to_dict(cfg))
    return Run(cfg, out_dir, accelerator, model, tokenizer, ref_model, optimizer, scheduler,
               tasks, sampler, sink, step, world, rank, group)


def save(run: Run) -> None:
    """Checkpoint the run at its current step (main process writes)."""
    run.accelerator.wait_for_everyone()
    if run.accelerator.is_main_process:
        state = {
            "step": run.step,
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "sampler": run.sampler.state_dict(),
            "rng": rng_state(),
            "config": to_dict(run.cfg),
        }
        save_checkpoint(run.out_dir, run.step, run.accelerator.unwrap_model(run.model),
                        run.tokenizer, state, run.cfg.keep_checkpoints)
    run.accelerator.wait_for_everyone()


class _Stop:
    requested = False


@contextmanager
def _stop_signals() -> Any:
    """SIGINT/SIGTERM finish the current step, checkpoint and stop cleanly."""
    stop = _Stop()

    def handler(signum: int, frame: Any) -> None:
        stop.requested = True

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for s in previous:
            signal.signal(s, handler)
    except ValueError:  # not in the main thread: leave signals alone
        previous = {}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextmanager
def _progress(run: Run) -> Any:
    """A rich progress bar with step, entropy, accuracy and ETA (main process only)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    enabled = run.cfg.progress and run.accelerator.is_main_process
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(),
        TextColumn("step {task.completed}/{task.total}"),
        TextColumn("H={task.fields[h]}  acc={task.fields[acc]}  val={task.fields[val]}"),
        TimeRemainingColumn(), disable=not enabled, transient=False,
    )
    task = progress.add_task(run.cfg.name, total=run.cfg.steps, completed=run.step,
                             h="-", acc="-", val="-")
    last_val = ["-"]

    def advance(m: dict[str, Any]) -> None:
        if "val/acc" in m:
            last_val[0] = f"{m['val/acc']:.3f}"
        progress.update(task, advance=1, h=f"{m['train/entropy']:.3f}",
                        acc=f"{m['train/acc']:.3f}", val=last_val[0])

    with progress:
        yield advance
