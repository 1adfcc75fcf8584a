"""Training with the "code" reward end to end: the tiny model on the tiny code task (complete
``print(...)``), every completion judged in the sandbox, statuses logged per step."""

from __future__ import annotations

import os
import shutil

import pytest

from llm.data.code_tasks import write_tiny_code_task
from llm.train import train
from tests.test_llm_train import read_metrics, shared_tiny_model, tiny_cfg

# CI installs bubblewrap (.ci/run): there a missing bwrap fails instead of skipping.
NEEDS_BWRAP = pytest.mark.skipif(
    shutil.which("bwrap") is None and not os.environ.get("CI"),
    reason="needs bubblewrap (apt-get install bubblewrap)",
)
STATUSES = ("passed", "wrong_answer", "runtime_error", "timeout", "memory", "no_code")


@NEEDS_BWRAP
def test_train_with_code_reward(tmp_path):
    data = write_tiny_code_task(tmp_path / "code.jsonl", 64, seed=0)
    cfg = tiny_cfg(
        shared_tiny_model(), train_data=str(data), reward="code", instruction="none",
        reward_timeout_s=2.0, samples_every=1,
    )  # fmt: skip
    train(cfg, tmp_path / "run")
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == [1, 2]
    n = cfg.prompts_per_step * cfg.group_size
    before = dict.fromkeys(STATUSES, 0.0)
    for row in rows:
        counts = {s: row.get(f"reward_check/{s}", 0.0) for s in STATUSES}
        step = {s: counts[s] - before[s] for s in STATUSES}
        assert sum(step.values()) == n, row  # every completion judged, once
        assert row["reward/mean"] == step["passed"] / n  # reward 1 exactly for the passes
        before = counts
    assert rows[-1].get("reward_check/sandbox_error", 0.0) == 0.0
    samples = (tmp_path / "run").glob("samples*")
    assert any(samples), "per-step samples were written"


@pytest.mark.slow
@NEEDS_BWRAP
def test_tiny_model_learns_the_code_task(tmp_path):
    """The tiny model learns to complete print(...) with the answer ("repeat 7" -> 7): one new
    token, whose chance value is ~1/55 (the tiny vocabulary). After 250 GRPO steps of 8 prompts ×
    8 samples the held-out accuracy is above 0.25, more than ten times chance. (Measured on the
    2-core development machine: see docs/SANDBOX.md; about 15 minutes.)"""
    train_data = write_tiny_code_task(tmp_path / "train.jsonl", 4096, seed=0)
    eval_data = write_tiny_code_task(tmp_path / "eval.jsonl", 64, seed=1)
    cfg = tiny_cfg(
        shared_tiny_model(), train_data=str(train_data), eval_data=str(eval_data),
        reward="code", instruction="none", reward_timeout_s=2.0, prompts_per_step=8,
        group_size=8, minibatch_size=64, max_new_tokens=1, total_steps=250, eval_every=50,
        eval_k=2, eval_limit=32,
    )  # fmt: skip
    train(cfg, tmp_path / "run")
    evals = [r["eval/avg@2"] for r in read_metrics(tmp_path / "run") if "eval/avg@2" in r]
    assert evals[-1] > 0.25, evals
