"""Data-parallel trainer (llm/parallel/comm.py): 2 gloo ranks reproduce the single-process update.

The file is also the worker: ``torchrun ... tests/test_llm_distributed_train.py --worker OUT``
runs the trainer's ``inner_steps`` on each rank's half of a fixed global rollout (FSDP2-wrapped
tiny Qwen2, float64) and writes the gathered parameters and the update metrics.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import pytest
import torch

from llm.config import build as C
from llm.rollout.experience import Experience
from llm.rollout.sampling import Generation
from tests.torchrun_util import torchrun

ROOT = Path(__file__).resolve().parents[1]
P, G, V, T = 4, 3, 53, 5  # 4 prompts × 3 samples over 2 ranks: 2 whole groups each
N = P * G
CASES = {
    # name: config overrides (K = epochs · N / minibatch inner steps)
    "grpo": dict(method="grpo", optimizer="sgd", lr=0.5, microbatch_size=2),
    "tic_grpo_kl": dict(method="tic_grpo", optimizer="sgd", lr=0.5, beta=0.05),
    "dapo": dict(
        method="dapo", optimizer="adamw", lr=0.01, epochs_per_rollout=2, max_grad_norm=0.1
    ),
    "grpo_two_minibatches": dict(method="grpo", optimizer="adamw", lr=0.01, minibatch_size=N // 2),
    "no_is": dict(method="grpo", optimizer="sgd", lr=0.5, no_is=True, minibatch_size=N // 2),
    # a token budget: the ranks' rows have different lengths, so the budget alone would give
    # them different numbers of forward passes (3 and 2 at 20 tokens); both must run 3
    "tic_grpo_token_budget": dict(method="tic_grpo", optimizer="sgd", lr=0.5, microbatch_tokens=20),
}


def build_model():
    import transformers

    cfg = transformers.Qwen2Config(
        vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
        tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.Qwen2ForCausalLM(cfg).double()


def make_cfg(name: str) -> C.TrainConfig:
    base = dict(max_new_tokens=T, minibatch_size=N, seed=3, max_grad_norm=0.0)
    return C.resolve(dataclasses.replace(C.TrainConfig(), **{**base, **CASES[name]}))


def make_experience(model, cfg) -> Experience:
    """The global rollout: varied prompt and completion lengths, stale old log-probs."""
    from llm.update.batching import sequence_logprobs
    from ticgrpo import group_advantages

    gen = torch.Generator().manual_seed(11)
    prompt_ids, completion_ids = [], []
    for _ in range(P):
        prompt = torch.randint(
            1, V, (int(torch.randint(2, 5, (1,), generator=gen)),), generator=gen
        )
        for _ in range(G):
            length = int(torch.randint(1, T + 1, (1,), generator=gen))
            prompt_ids.append(prompt.tolist())
            completion_ids.append(torch.randint(1, V, (length,), generator=gen).tolist())
    rewards = torch.randint(0, 2, (N,), generator=gen).double()
    exp = Experience(
        prompts=[f"p{i}" for i in range(P)], answers=["0"] * N,
        gen=Generation(prompt_ids, completion_ids, ["x"] * N, [False] * N),
        rewards=rewards, raw_rewards=rewards, group_size=G,
    )  # fmt: skip
    exp.advantages = group_advantages(rewards, G, mode=cfg.advantage_mode)
    logp, _ = sequence_logprobs(model, exp, pad_id=0, microbatch=N, chunk_size=64,
                                with_entropy=False)  # fmt: skip
    noise = 0.3 * (2 * torch.rand(logp.shape, generator=gen, dtype=torch.float64) - 1)
    exp.old_logp = (logp.double() + noise) * (logp != 0)
    exp.ref_logp = (logp.double() - noise) * (logp != 0)
    return exp


def local_part(exp: Experience, rows: range) -> Experience:
    """Rows ``rows`` (whole groups) of the rollout, as a rank holds them."""
    idx = list(rows)
    pick = torch.tensor(idx)
    return Experience(
        prompts=exp.prompts[rows.start // G : rows.stop // G],
        answers=[exp.answers[i] for i in idx],
        gen=Generation(*([getattr(exp.gen, f)[i] for i in idx] for f in
                         ("prompt_ids", "completion_ids", "texts", "truncated"))),
        rewards=exp.rewards[pick], raw_rewards=exp.raw_rewards[pick], group_size=G,
        advantages=exp.advantages[pick], old_logp=exp.old_logp[pick], ref_logp=exp.ref_logp[pick],
    )  # fmt: skip


def run_update(name: str, comm=None, *, inject_nan: bool = False):
    """(model, UpdateResult) after the inner steps of case ``name`` (this rank's half under comm)."""
    from llm.parallel.fsdp import shard
    from llm.runstate.setup import make_optimizer
    from llm.update.inner_steps import inner_steps

    cfg = make_cfg(name)
    model = build_model()
    exp = make_experience(model, cfg)
    if comm is not None:
        exp = local_part(exp, range(comm.rank * N // 2, (comm.rank + 1) * N // 2))
        shard(comm, model)
    optimizer, scheduler = make_optimizer(cfg, model)
    result = inner_steps(model, optimizer, scheduler, exp, cfg, step=1, pad_id=0,
                         inject_nan=inject_nan, comm=comm)  # fmt: skip
    return model, result


def reference_two_minibatches(name: str):
    """Single process, same global mini-batches as 2 ranks: mini-batch j is the union of each
    rank's rows ``perm_r[j·m:(j+1)·m]`` of its own seeded shuffle (llm.update.inner_steps.inner_steps)."""
    from llm.runstate.setup import make_optimizer
    from llm.update.inner_steps import MetricMean, _guarded_step, _minibatch_loss

    cfg = make_cfg(name)
    model = build_model()
    exp = make_experience(model, cfg)
    optimizer, scheduler = make_optimizer(cfg, model)
    half, m = N // 2, cfg.minibatch_size // 2
    perms = []
    for rank in (0, 1):
        gen = torch.Generator().manual_seed((cfg.seed * 1_000_003 + 1) * 65_537 + rank)
        perms.append(torch.randperm(half, generator=gen) + rank * half)
    losses = []
    for j in range(half // m):
        rows = torch.cat([p[j * m : (j + 1) * m] for p in perms])
        loss = _minibatch_loss(model, exp, rows, cfg, pad_id=0, inject_nan=False, at_old=False,
                               acc=MetricMean())  # fmt: skip
        losses.append(_guarded_step(model, optimizer, scheduler, cfg, loss)[2])
    return model, losses


def budget_logprobs(comm=None) -> torch.Tensor:
    """``sequence_logprobs`` [rows, T] under the budget of case ``tic_grpo_token_budget``: this
    rank's half of the rollout on the sharded model, or all of it in one process."""
    from llm.parallel.fsdp import shard
    from llm.update.batching import sequence_logprobs

    cfg = make_cfg("tic_grpo_token_budget")
    model = build_model()
    exp = make_experience(model, cfg)
    if comm is not None:
        exp = local_part(exp, range(comm.rank * N // 2, (comm.rank + 1) * N // 2))
        shard(comm, model)
    logp, _ = sequence_logprobs(model, exp, pad_id=0, microbatch=N, chunk_size=64,
                                with_entropy=False, microbatch_tokens=cfg.microbatch_tokens,
                                comm=comm)  # fmt: skip
    return logp


def full_params(model) -> dict[str, torch.Tensor]:
    return {
        k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone()
        for k, v in model.state_dict().items()
    }


def worker(out_dir: str) -> None:
    from llm.parallel.collectives import init_distributed, teardown
    from llm.parallel.comm import Comm

    info = init_distributed("gloo")
    comm = Comm(info)
    torch.set_num_threads(1)
    try:
        report = {}
        for name in CASES:
            model, result = run_update(name, comm)
            params = full_params(model)
            report[name] = result.metrics
            if comm.is_main:
                torch.save(params, Path(out_dir) / f"params_{name}.pt")
        # the old-log-prob pass under the token budget (3 vs 2 micro-batches before agreeing)
        torch.save(budget_logprobs(comm), Path(out_dir) / f"budget_logp{comm.rank}.pt")
        # a NaN on rank 1 only: both ranks must skip, neither may step alone
        model, result = run_update("grpo", comm, inject_nan=comm.rank == 1)
        report["nan_rank1"] = {"skipped": result.skipped, "steps": result.steps}
        unchanged = all(
            torch.equal(a, b)
            for a, b in zip(full_params(model).values(), build_model().state_dict().values())
        )
        report["nan_rank1"]["unchanged"] = unchanged  # fmt: skip
        (Path(out_dir) / f"rank{comm.rank}.json").write_text(json.dumps(report))
    finally:
        teardown()


@pytest.fixture(scope="module")
def update_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist_update")
    res = torchrun([__file__, "--worker", str(out)], cwd=ROOT, timeout_s=120)
    assert res.returncode == 0, res.stdout[-4000:]
    return out


@pytest.mark.distributed
@pytest.mark.parametrize("name", list(CASES))
def test_two_rank_inner_steps_equal_single_process(update_run: Path, name: str) -> None:
    if name == "grpo_two_minibatches":
        model, losses = reference_two_minibatches(name)
        single_loss = sum(losses) / len(losses)
    else:
        model, result = run_update(name)
        single_loss = result.metrics["loss"]
    sharded = torch.load(update_run / f"params_{name}.pt")
    single = model.state_dict()
    assert sharded.keys() == single.keys()
    initial = build_model().state_dict()
    moved = sum(float((single[k] - initial[k]).abs().sum()) for k in single)
    assert moved > 1e-3  # the update did move the weights
    for key, value in single.items():
        torch.testing.assert_close(sharded[key], value, rtol=1e-9, atol=1e-11, msg=key)
    for rank in (0, 1):  # every rank logs the global loss (the sum of the ranks' parts)
        metrics = json.loads((update_run / f"rank{rank}.json").read_text())[name]
        assert metrics["loss"] == pytest.approx(single_loss, rel=1e-9, abs=1e-12)


@pytest.mark.distributed
def test_old_logprob_pass_under_a_budget_runs_in_lockstep(update_run: Path) -> None:
    single = budget_logprobs()  # [N, T]
    parts = [torch.load(update_run / f"budget_logp{rank}.pt") for rank in (0, 1)]
    for rank, part in enumerate(parts):  # [N/2, T_rank]: T_rank is that rank's longest completion
        rows = single[rank * N // 2 : (rank + 1) * N // 2]
        torch.testing.assert_close(part, rows[:, : part.shape[1]], rtol=1e-12, atol=1e-12)
        assert not rows[:, part.shape[1] :].any()


@pytest.mark.distributed
def test_a_non_finite_loss_on_one_rank_skips_the_step_on_every_rank(update_run: Path) -> None:
    for rank in (0, 1):
        nan = json.loads((update_run / f"rank{rank}.json").read_text())["nan_rank1"]
        assert nan == {"skipped": 1, "steps": 1, "unchanged": True}


def strip_timing(rows: list[dict]) -> list[dict]:
    """Rows without wall-clock values and the reward checker's per-process counters."""
    drop = ("timing/", "tokens_per_s", "reward_check/")
    return [{k: v for k, v in r.items() if not (k.startswith(drop) or k.endswith("_s"))}
            for r in rows]  # fmt: skip


REQUIRED_KEYS = (
    "step", "reward/mean", "reward/std", "frac_reward_zero_std", "completions/mean_length",
    "entropy", "kl", "loss/policy", "loss", "grad_norm", "clip_ratio/high", "clip_ratio/low",
    "log_ratio/token_min", "log_ratio/token_max", "ess/traj", "lr", "update/inner_steps",
    "update/skipped_inner_steps", "skipped_steps", "advantage/abs_mean", "data/epoch",
    "timing/generate_s", "timing/update_s", "timing/step_s", "tokens_per_s",
    "dynamic_sampling/rounds", "dynamic_sampling/zero_signal_groups",
)  # fmt: skip


@pytest.mark.distributed
def test_torchrun_train_end_to_end_then_single_process_resume(tmp_path: Path) -> None:
    run = tmp_path / "run"
    # dapo: token_mean + dynamic sampling; beta > 0: a sharded reference model too
    sets = dict(distributed="true", total_steps=3, method="dapo", beta=0.01, prompts_per_step=4,
                group_size=4, minibatch_size=8, microbatch_size=2, tiny_task_size=64,
                eval_limit=6, eval_k=2, eval_every=2, samples_every=1, save_every=2,
                tensorboard="false", progress="false")  # fmt: skip
    args = ["-m", "ticgrpo.cli", "train", "--preset", "tiny", "--out", str(run)]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    res = torchrun(args, cwd=tmp_path, timeout_s=150)
    assert res.returncode == 0, res.stdout[-4000:]
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3]  # rank 0 alone wrote them
    for line in lines:
        missing = [k for k in REQUIRED_KEYS if k not in line]
        assert not missing, missing
        assert line["update/inner_steps"] == 2  # K = N/minibatch = 16/8 over both ranks
        assert line["log_ratio/token_min"] <= line["log_ratio/token_mean"]
    assert "eval/avg@2" in lines[1] and lines[1]["eval/num_problems"] == 6
    assert max(x["kl"] for x in lines) > 0  # the policy left the (sharded) reference
    assert len((run / "samples.jsonl").read_text().splitlines()) > 0
    # the checkpoint is the single-process format: a plain model and optimiser load it
    from transformers import AutoModelForCausalLM

    from llm.runstate.checkpoint import load_checkpoint
    from llm.runstate.setup import make_optimizer

    cfg = C.build_config(base=C.load_yaml(run / "config.yaml"))
    model = AutoModelForCausalLM.from_pretrained(run / "tiny_model")
    optimizer, scheduler = make_optimizer(cfg, model)
    state = load_checkpoint(run, model=model, optimizer=optimizer, scheduler=scheduler,
                            restore_rng=False)  # fmt: skip
    rounds = sum(x["dynamic_sampling/rounds"] for x in lines)  # DAPO refills draw more prompts
    assert state["step"] == 3 and state["data_pos"] == rounds * 4
    assert len(optimizer.state) == len(list(model.parameters()))  # AdamW moments restored
    assert scheduler.last_epoch == 3 * 2
    # 2 processes resume from the step-2 checkpoint and reproduce step 3 exactly
    import shutil

    again = tmp_path / "again"
    shutil.copytree(run, again)
    shutil.rmtree(again / "checkpoints" / "step-00000003")
    resume = ["-m", "ticgrpo.cli", "train", "--resume", "--out", str(again)]
    res = torchrun(resume, cwd=tmp_path, timeout_s=150)
    assert res.returncode == 0, res.stdout[-4000:]
    redone = [json.loads(x) for x in (again / "metrics.jsonl").read_text().splitlines()]
    assert strip_timing(redone) == strip_timing(lines)
    # ... and a single process continues the original run from its step-3 checkpoint
    from llm.train import main

    argv = ["--resume", "--out", str(run), "--set", "total_steps=4", "--set", "eval_every=0"]
    assert main(argv) == 0
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3, 4]


@pytest.mark.distributed
def test_torchrun_resume_without_a_usable_checkpoint_refuses_on_every_rank(tmp_path: Path) -> None:
    """Rank 0 checks the folder; its RunFolderError reaches every rank (no rank waits on a
    collective), each exits 2 with the one line, and no file of the run changes."""
    import hashlib

    from llm.train import main
    from tests.test_llm_train import shared_tiny_model

    run = tmp_path / "run"
    sets = dict(model=shared_tiny_model(), total_steps=1, prompts_per_step=4, group_size=4,
                minibatch_size=8, max_new_tokens=3, tiny_task_size=64, keep_checkpoints=1,
                tensorboard="false", progress="false")  # fmt: skip
    argv = ["--preset", "tiny", "--out", str(run)]
    for key, value in sets.items():
        argv += ["--set", f"{key}={value}"]
    assert main(argv) == 0
    weights = run / "checkpoints" / "step-00000001" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[200] ^= 0xFF
    weights.write_bytes(bytes(data))

    def snapshot() -> dict[str, str]:
        return {str(f.relative_to(run)): hashlib.sha256(f.read_bytes()).hexdigest()
                for f in sorted(run.rglob("*")) if f.is_file() and f.name != ".lock"}  # fmt: skip

    before = snapshot()
    resume = ["-m", "ticgrpo.cli", "train", "--resume", "--out", str(run), "--set",
              "distributed=true", "--set", "total_steps=2"]  # fmt: skip
    res = torchrun(resume, cwd=tmp_path, timeout_s=120)
    assert res.returncode != 0
    ours = [x for x in res.stdout.splitlines() if "ticgrpo train: --resume:" in x]
    assert len(ours) == 2 and all("no usable checkpoint" in x for x in ours), res.stdout[-3000:]
    # (torchrun's launcher prints its own ChildFailedError report; no rank's code raised)
    assert not [x for x in res.stdout.splitlines() if 'File "' in x and "/llm/" in x]
    assert snapshot() == before


@pytest.mark.distributed
def test_sigterm_to_one_rank_stops_every_rank_after_the_step_with_a_checkpoint(
    tmp_path: Path,
) -> None:
    """The ranks agree on a stop after each step (one all-reduce): SIGTERM to rank 1 alone
    makes both finish the step, rank 0 save it, and both exit 143."""
    import signal
    import time

    from llm.runstate.checkpoint import latest_checkpoint
    from tests.test_llm_train import shared_tiny_model
    from tests.torchrun_util import descendants, kill_tree, start_torchrun

    run = tmp_path / "run"
    sets = dict(model=shared_tiny_model(), distributed="true", total_steps=200, save_every=0,
                prompts_per_step=4, group_size=4, minibatch_size=8, max_new_tokens=3,
                tiny_task_size=64, tensorboard="false", progress="false")  # fmt: skip
    args = ["-m", "ticgrpo.cli", "train", "--preset", "tiny", "--out", str(run)]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    proc = start_torchrun(args, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        metrics = run / "metrics.jsonl"
        while not metrics.exists() or len(metrics.read_text().splitlines()) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.02)
        rank1 = [pid for pid in descendants(proc.pid) if _env_of(pid).get("RANK") == "1"]
        assert len(rank1) == 1
        os.kill(rank1[0], signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            kill_tree(proc.pid)
    stopped = [x for x in out.splitlines() if "ticgrpo train: stopped by SIGTERM after step" in x]
    assert len(stopped) == 2, out[-3000:]  # both ranks, after the same step
    assert proc.returncode != 0 and "exitcode  : 143" in out
    done = len(metrics.read_text().splitlines())
    assert 2 <= done < 200 and f"after step {done} " in stopped[0]
    assert latest_checkpoint(run).name == f"step-{done:08d}"


def _env_of(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(
        item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item
    )


def test_config_rejects_shares_that_are_not_whole(monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(C.ConfigError) as info:
        C.build_config(preset="tiny", overrides=["distributed=true", "prompts_per_step=6"])
    assert "prompts_per_step=6 must be a multiple of the world size 4" in str(info.value)
    with pytest.raises(C.ConfigError, match="minibatch_size=2 must be a multiple"):
        C.build_config(preset="tiny", overrides=["distributed=true", "minibatch_size=2"])
    with pytest.raises(C.ConfigError, match="per-rank mini-batch minibatch_size/world = 64/4"):
        C.build_config(preset="tiny", overrides=["distributed=true", "microbatch_size=32"])
    assert C.build_config(preset="tiny", overrides=["distributed=true"]).distributed
    # a token budget is allowed: the ranks agree on one micro-batch count (lockstep_microbatches)
    budget = ["distributed=true", "microbatch_tokens=256"]
    assert C.build_config(preset="tiny", overrides=budget).microbatch_tokens == 256
    # without distributed=true the world size is not a constraint
    assert C.build_config(preset="tiny", overrides=["prompts_per_step=6", "minibatch_size=6"])


if __name__ == "__main__" and "--worker" in sys.argv:
    worker(sys.argv[sys.argv.index("--worker") + 1])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip interpreter teardown, where gloo's threads have been seen to abort
