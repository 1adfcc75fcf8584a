"""Training with the "code" reward end to end: the tiny model on the tiny code task (complete
``print(...)``), every completion judged in the sandbox, statuses logged per step."""

from __future__ import annotations

import shutil

import pytest

from llm.data.code_tasks import write_tiny_code_task
from llm.train import train
from tests.test_llm_train import read_metrics, shared_tiny_model, tiny_cfg

STATUSES = ("passed", "wrong_answer", "runtime_error", "timeout", "memory", "no_code")


@pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="needs bubblewrap (apt-get install bubblewrap)"
)
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
