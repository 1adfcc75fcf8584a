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
