"""Two data-parallel CPU processes (gloo, through accelerate) = one process on the same batch."""

import os

import pytest
import torch
import torch.multiprocessing as mp
from spawn_helpers import fixed_batch, free_port, update_fixed_batch

from entropyrl.config import load_config
from entropyrl.distributed import Dist
from entropyrl.train.batch_metrics import StepBatch, step_metrics

ROWS = 16


def _config(model_dir):
    # One mini-batch = the whole global batch, two epochs: the second update scores the
    # selection with a no-grad forward of the current parameters on every rank.
    return load_config("testbed/kl_cov", [
        f"model.path={model_dir}", "model.device=cpu", "rollout.n_prompts=4",
        "rollout.group_size=4", "update.mini_batch_size=16", "update.micro_batch_size=4",
        "update.epochs=2", "update.shuffle=false", "loss.kl_cov.ratio=0.05", "optim.lr=1e-2",
        # Adam with a small epsilon turns the float noise of structurally zero gradients (the
        # key bias: softmax is shift-invariant) into full-size steps; a larger epsilon keeps
        # the comparison about the gradients.
        "optim.eps=1e-4",
    ])


def _step_batch(batch, rows):
    roll = batch["rollout"]
    # Each rank numbers its prompt groups from 0, as the trainer's rollouts do.
    ids = roll.group_ids[rows] - roll.group_ids[rows].min()
    return StepBatch(roll.response_mask[rows], batch["old"][rows], batch["entropy"][rows],
                     batch["adv"][rows], batch["rewards"][rows], batch["rewards"][rows] > 0,
                     roll.truncated[rows], ids)


def _worker(rank, world, port, model_dir, batch_path, out_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    assert acc.num_processes == world
    batch = torch.load(batch_path, weights_only=False)
    per = ROWS // world
    rows = torch.arange(rank * per, (rank + 1) * per)
    params, metrics, _ = update_fixed_batch(_config(model_dir), batch, rows, acc)
    batch_metrics = step_metrics(_step_batch(batch, rows), Dist.from_accelerator(acc))
    if rank == 0:
        torch.save({"params": params, "metrics": metrics, "batch_metrics": batch_metrics},
                   out_path)
    acc.wait_for_everyone()
    # Leave without C++ teardown: destroying gloo's threads at interpreter exit occasionally
    # aborts ("terminate called without an active exception") after the work is done.
    os._exit(0)


@pytest.mark.distributed
def test_two_processes_match_one_process(micro_model_dir, tmp_path):
    from accelerate import Accelerator

    batch = fixed_batch(_config(micro_model_dir))
    batch["rewards"] = torch.tensor([1.0, 0.0, 0.0, 1.0] * 4)
    batch_path = tmp_path / "batch.pt"
    torch.save(batch, batch_path)

    single, single_metrics, _ = update_fixed_batch(_config(micro_model_dir), batch,
                                                   torch.arange(ROWS), Accelerator(cpu=True))
    out_path = tmp_path / "two.pt"
    mp.spawn(_worker, args=(2, free_port(), str(micro_model_dir), str(batch_path), str(out_path)),
             nprocs=2, join=True)
    two = torch.load(out_path, weights_only=False)
    for k, v in single.items():
        assert torch.allclose(v, two["params"][k], rtol=1e-5, atol=1e-6), k
    for key in ("loss/total", "loss/selected_frac", "loss/approx_kl_k3", "optim/grad_norm"):
        assert two["metrics"][key] == pytest.approx(single_metrics[key], rel=1e-4, abs=1e-7), key
    assert single_metrics["loss/selected_frac"] > 0
    # The step's batch statistics and covariance diagnostics describe the global batch.
    single_batch = step_metrics(_step_batch(batch, torch.arange(ROWS)), Dist.single())
    assert set(two["batch_metrics"]) == set(single_batch)
    for key, value in single_batch.items():
        assert two["batch_metrics"][key] == pytest.approx(value, rel=1e-5, abs=1e-7), key


def _train_worker(rank, world, port, out_dir, result_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    from accelerate import Accelerator

    from entropyrl.train.entropy_control import EntropyControl
    from entropyrl.train.setup import setup
    from entropyrl.train.step import rl_step

    # The shipped base model solves about one sample in five, so whether a rank's groups are
    # mixed varies by rank and round: dynamic sampling refills some ranks and not others.
    cfg = load_config("testbed/grpo", [
        "model.device=cpu", "rollout.n_prompts=4", "rollout.group_size=4",
        "rollout.dynamic_sampling=true", "rollout.max_gen_batches=4",
        "update.mini_batch_size=16", "update.micro_batch_size=4",
        "data.testbed.train_size=64", "data.testbed.val_size=8", "progress=false", "seed=3",
        # The entropy controller reads the global entropy, so every rank sets the same bonus.
        "control.kind=pi", "control.actuator=entropy_coef", "control.target_entropy=0.5",
        "control.min_value=1e-4", "control.max_value=1e-2",
    ])
    run = setup(cfg, out_dir, Accelerator(cpu=True))
    controller = EntropyControl.of_run(cfg, run.extra_state)
    # A predictive controller reading the same steps (its value is not applied): it fits its
    # plant from the global batch's covariances.
    shadow_cfg = load_config("testbed/kl_cov", ["control.kind=predictive",
                                                "control.actuator=kl_cov_ratio",
                                                "control.target_entropy=0.2"])
    shadow = EntropyControl.of_run(shadow_cfg, {})
    metrics, shadow_metrics, batches = [], [], []
    for step in range(1, 6):
        run.loss = controller.loss_for_step()
        m = rl_step(run, step)
        m.update(controller.observe(step, m, run.last_batch))
        shadow_metrics.append(shadow.observe(step, m, run.last_batch))
        metrics.append(m)
        batches.append(run.last_batch)
    torch.save({"sampler": run.sampler.state_dict(), "metrics": metrics,
                "shadow": shadow_metrics, "batches": batches,
                "kept_rounds": [m["train/gen_batches"] for m in metrics]},
               result_dir / f"rank{rank}.pt")
    run.learner.accelerator.wait_for_everyone()
    os._exit(0)


@pytest.mark.distributed
def test_two_process_steps_share_data_position_and_metrics(tmp_path):
    mp.spawn(_train_worker, args=(2, free_port(), tmp_path / "run", tmp_path), nprocs=2,
             join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    # Every rank draws every generation round's prompts, so the data position agrees.
    assert r0["sampler"] == r1["sampler"]
    assert max(r0["kept_rounds"]) > 1  # refills happened
    values = [m["control/actuator_value"] for m in r0["metrics"]]
    assert len(set(values)) > 1  # the controller acted, identically on both ranks (below)
    for m0, m1 in zip(r0["metrics"], r1["metrics"], strict=True):
        for key, value in m0.items():
            if key.startswith(("train/", "dyn/", "control/")):
                assert m1[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    from entropyrl.train.entropy_control import EntropyControl

    # The predictive controller saw the global batch (both ranks' rows, the same on each) and
    # chose what one process reading that batch chooses.
    shadow_cfg = load_config("testbed/kl_cov", ["control.kind=predictive",
                                                "control.actuator=kl_cov_ratio",
                                                "control.target_entropy=0.2"])
    single = EntropyControl.of_run(shadow_cfg, {})
    for step, (b0, b1) in enumerate(zip(r0["batches"], r1["batches"], strict=True), start=1):
        assert b0.mask.shape[0] == 16  # 4 prompts x 4 samples: 8 rows from each rank
        assert torch.equal(b0.mask, b1.mask) and torch.equal(b0.logprobs, b1.logprobs)
        expected = single.observe(step, r0["metrics"][step - 1], b0)
        assert r0["shadow"][step - 1] == expected == r1["shadow"][step - 1]
    assert len({m["control/actuator_value"] for m in r0["shadow"]}) > 1
