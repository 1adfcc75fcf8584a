"""A non-finite loss or gradient never reaches the weights (fault injection: NaN log-probs)."""

from __future__ import annotations

import math

import torch

from llm.config import build as C
from llm.train import train
from tests.test_llm_train import final_weights, read_metrics, shared_tiny_model, tiny_cfg


def test_nan_logprobs_skip_the_step_and_training_continues(tmp_path):
    opts = dict(method="grpo", epochs_per_rollout=2)  # K = 2 · 16/8 = 4 inner steps
    one, two, three = tmp_path / "one", tmp_path / "two", tmp_path / "three"
    train(tiny_cfg(shared_tiny_model(), total_steps=1, **opts), one)
    train(
        tiny_cfg(shared_tiny_model(), total_steps=2, debug_inject_nan_logp_at_steps=[2], **opts),
        two,
    )
    train(
        tiny_cfg(shared_tiny_model(), total_steps=3, debug_inject_nan_logp_at_steps=[2], **opts),
        three,
    )
    w1, w2, w3 = final_weights(one), final_weights(two), final_weights(three)
    for k in w1:  # step 2 changed nothing
        assert torch.equal(w1[k], w2[k]), k
    assert any(not torch.equal(w2[k], w3[k]) for k in w2)  # step 3 trained again
    assert all(torch.isfinite(v).all() for v in w3.values())
    rows = read_metrics(three)
    assert [r["skipped_steps"] for r in rows] == [0, 4, 4]
    assert [r["update/skipped_inner_steps"] for r in rows] == [0, 4, 0]
    for row in rows:  # the log stays valid JSON with finite numbers
        assert all(math.isfinite(v) for v in row.values() if isinstance(v, float))


def test_injection_steps_are_validated():
    cfg = C.TrainConfig(debug_inject_nan_logp_at_steps=[0])
    try:
        C.validate(cfg, check_paths=False)
    except C.ConfigError as e:
        assert "start at 1" in str(e)
    else:
        raise AssertionError("step 0 accepted")


def test_a_step_whose_result_overflows_is_undone_and_the_run_goes_on(tmp_path):
    """lr=1e10: the gradient is finite but the stepped model's forward is not. The step is
    undone (weights and AdamW state as before it) and counted; the next rollout samples from
    finite weights instead of crashing."""
    from tests.test_llm_train import _load

    one = tmp_path / "one"
    train(tiny_cfg(shared_tiny_model(), lr=1e10, total_steps=1), one)
    w0, w1 = _load(shared_tiny_model()), final_weights(one)
    w1.setdefault("model.embed_tokens.weight", w1.get("lm_head.weight"))  # tied: saved once
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k  # both inner steps undone exactly
    three = tmp_path / "three"
    train(tiny_cfg(shared_tiny_model(), lr=1e10, total_steps=3), three)
    rows = read_metrics(three)
    assert rows[0]["update/skipped_inner_steps"] == 2 and rows[-1]["step"] == 3
    assert all(torch.isfinite(v).all() for v in final_weights(three).values())


def test_consecutive_skipped_steps_stop_the_run_with_one_line(tmp_path, capsys):
    from llm.train import main

    run = tmp_path / "run"
    argv = ["--preset", "tiny", "--out", str(run)]
    sets = dict(
        model=shared_tiny_model(), prompts_per_step=4, group_size=4, max_new_tokens=3,
        minibatch_size=8, total_steps=5, tiny_task_size=64, progress="false",
        tensorboard="false", debug_inject_nan_logp_at_steps="[2,3,4]", max_consecutive_skips=4,
        save_every=1,
    )  # fmt: skip
    for k, v in sets.items():
        argv += ["--set", f"{k}={v}"]
    capsys.readouterr()
    assert main(argv) == 3
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("ticgrpo train:")]
    assert len(lines) == 1 and "stopped at step 3: the last 4 optimiser steps" in lines[0]
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3]
    from llm.runstate.checkpoint import latest_checkpoint

    assert latest_checkpoint(run).name == "step-00000002"  # the aborted step is not saved
