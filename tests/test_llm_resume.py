"""--resume continues a run exactly: 4 steps == 2 steps + resume to 4 (metrics and weights)."""

from __future__ import annotations

import torch

from llm.train import main, train
from tests.test_llm_train import (
    final_weights,
    read_metrics,
    shared_tiny_model,
    strip_timing,
    tiny_cfg,
)


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    # AdamW + warmup (scheduler state), 2 epochs (shuffle seeds), eval (eval seeds), tiny data
    # small enough that the stream wraps into a new epoch (data position).
    opts = dict(
        method="tic_grpo",
        epochs_per_rollout=2,
        warmup_steps=3,
        tiny_task_size=12,
        eval_data="tiny",
        eval_every=2,
        eval_limit=4,
        eval_k=2,
        save_every=2,
        group_size=8,
        max_new_tokens=4,
    )
    full, split = tmp_path / "full", tmp_path / "split"
    train(tiny_cfg(shared_tiny_model(), total_steps=4, **opts), full)
    train(tiny_cfg(shared_tiny_model(), total_steps=2, **opts), split)
    code = main(["--out", str(split), "--resume", "--set", "total_steps=4",
                 "--set", "progress=false"])  # fmt: skip
    assert code == 0
    a, b = strip_timing(read_metrics(full)), strip_timing(read_metrics(split))
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    assert a == b
    assert any(r["advantage/abs_mean"] > 0 for r in a)  # a real gradient (AdamW keeps moving)
    assert a[-1]["data/epoch"] >= 1  # 4 steps × 4 prompts over 12 problems
    wa, wb = final_weights(full), final_weights(split)
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_resume_after_a_crash_drops_lines_past_the_checkpoint(tmp_path):
    """Steps logged after the last checkpoint (a crash before the next save) are redone."""
    run = tmp_path / "run"
    train(tiny_cfg(shared_tiny_model(), total_steps=3, save_every=2), run)
    # simulate a crash after step 3 was logged but before its checkpoint was written
    import shutil

    from llm.runstate.checkpoint import checkpoint_root

    root = checkpoint_root(run)
    shutil.rmtree(root / "step-00000003")
    (root / "latest").write_text("step-00000002\n")
    logged = read_metrics(run)
    assert main(["--out", str(run), "--resume", "--set", "progress=false"]) == 0
    again = read_metrics(run)
    assert [r["step"] for r in again] == [1, 2, 3]
    assert strip_timing(again) == strip_timing(logged)
