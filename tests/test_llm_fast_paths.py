"""Trainer fast paths: reusing the on-policy forward as old log-probs, and static-cache rollouts.

Both are exact shortcuts, so each is held to the reference path bit for bit on CPU (tiny model,
float32): the same logged metrics (timings aside), the same samples and the same final weights.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import llm.rollout.experience as E
import llm.train as T
from llm.config import build as C
from llm.update.inner_steps import inner_steps, reuses_onpolicy_logp
from tests.test_llm_train import (
    final_weights,
    read_metrics,
    shared_tiny_model,
    strip_timing,
    tiny_cfg,
)


def _run(monkeypatch, cfg: C.TrainConfig) -> tuple[list[dict], dict, str, int]:
    """Train ``cfg``; return (metrics without timings, final weights, samples text, number of
    ``sequence_logprobs`` passes the loop ran)."""
    calls = []
    original = T.sequence_logprobs

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(T, "sequence_logprobs", counted)
    run_dir = Path(tempfile.mkdtemp(prefix="ticgrpo-fast-"))
    T.train(cfg, run_dir)
    samples = (run_dir / "samples.jsonl").read_text() if cfg.samples_every else ""
    return strip_timing(read_metrics(run_dir)), final_weights(run_dir), samples, len(calls)


def _assert_same_run(a, b) -> None:
    assert a[0] == b[0]  # every logged value, exactly
    assert a[2] == b[2]
    assert a[1].keys() == b[1].keys()
    for name in a[1]:
        assert torch.equal(a[1][name], b[1][name]), name


# One inner step over the whole rollout (with micro-batches), the no-IS ablation (K = 2 steps of
# one gradient), and a KL term (the reference pass must still run).
REUSE_CASES = [
    ({"minibatch_size": 0, "epochs_per_rollout": 1}, 0),
    ({"minibatch_size": 16, "microbatch_size": 4, "epochs_per_rollout": 1}, 0),
    ({"no_is": True, "minibatch_size": 8, "epochs_per_rollout": 2}, 0),
    ({"minibatch_size": 0, "beta": 0.1}, 1),
]


@pytest.mark.parametrize(("overrides", "passes_per_step"), REUSE_CASES)
def test_reusing_the_onpolicy_forward_changes_nothing_but_skips_the_pass(
    monkeypatch, overrides, passes_per_step
) -> None:
    model = shared_tiny_model()
    common = dict(total_steps=2, lr=1e-2, samples_every=1, **overrides)
    on = _run(monkeypatch, tiny_cfg(model, reuse_onpolicy_logp=True, **common))
    off = _run(monkeypatch, tiny_cfg(model, reuse_onpolicy_logp=False, **common))
    _assert_same_run(on, off)
    assert on[3] == 2 * passes_per_step  # the old-log-prob pass is gone (the reference stays)
    assert off[3] == 2 * (passes_per_step + 1)
    assert "entropy" in on[0][0] and on[0][0]["entropy"] > 0


def test_old_pass_still_runs_when_theta_moves_between_steps(monkeypatch) -> None:
    cfg = tiny_cfg(shared_tiny_model(), minibatch_size=8, total_steps=1)  # K = 2 mini-batches
    assert cfg.reuse_onpolicy_logp and not reuses_onpolicy_logp(cfg)
    assert _run(monkeypatch, cfg)[3] == 1


def test_reuse_rule() -> None:
    base = tiny_cfg(shared_tiny_model(), minibatch_size=0, epochs_per_rollout=1)  # N = 16
    assert reuses_onpolicy_logp(base)
    assert reuses_onpolicy_logp(dataclasses.replace(base, minibatch_size=16))
    assert not reuses_onpolicy_logp(dataclasses.replace(base, minibatch_size=8))
    assert not reuses_onpolicy_logp(dataclasses.replace(base, epochs_per_rollout=2))
    assert reuses_onpolicy_logp(dataclasses.replace(base, epochs_per_rollout=2, no_is=True))
    assert not reuses_onpolicy_logp(dataclasses.replace(base, reuse_onpolicy_logp=False))


def test_inner_steps_refuse_a_missing_old_logp_when_it_is_needed() -> None:
    cfg = tiny_cfg(shared_tiny_model(), minibatch_size=8)
    model = torch.nn.Linear(1, 1)
    exp = SimpleNamespace(old_logp=None)
    with pytest.raises(ValueError, match="old_logp is missing"):
        inner_steps(model, None, None, exp, cfg, step=1, pad_id=0)


def test_static_cache_rollouts_match_the_plain_path(monkeypatch) -> None:
    """Same seed, same samples, metrics and weights (the static cache changes the attention's
    padded length, not the arithmetic of real positions; on this model no draw flips)."""
    used = []
    fast = E.generate_fast

    def spy(*args, **kwargs):
        used.append(kwargs["batch_size"])
        return fast(*args, **kwargs)

    monkeypatch.setattr(E, "generate_fast", spy)
    model = shared_tiny_model()
    common = dict(total_steps=2, max_new_tokens=6, samples_every=1)
    static = _run(monkeypatch, tiny_cfg(model, generation="static", **common))
    assert used == [16, 16]  # generation_batch_size=0 on CPU: all N = 4·4 at once
    plain = _run(monkeypatch, tiny_cfg(model, generation="plain", **common))
    assert len(used) == 2
    _assert_same_run(static, plain)


def test_sampling_batch_size(monkeypatch) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(shared_tiny_model())
    prompts = ["repeat 1", "repeat 12 and more"]
    cpu_model = torch.nn.Linear(1, 1)
    kw = dict(num_samples=3, max_new_tokens=5)
    assert E.sampling_batch_size(cpu_model, tok, prompts, given=4, **kw) == 4
    assert E.sampling_batch_size(cpu_model, tok, prompts, given=None, **kw) == 6
    seen = {}

    def fake_auto(model, **kwargs):
        seen.update(kwargs)
        return 5

    class OnCuda:  # a parameter that reports a CUDA device (no GPU needed)
        def parameters(self):
            yield SimpleNamespace(device=torch.device("cuda"))

    monkeypatch.setattr(E, "auto_batch_size", fake_auto)
    assert E.sampling_batch_size(OnCuda(), tok, prompts, given=0, **kw) == 5
    longest = len(tok("repeat 12 and more")["input_ids"])
    assert seen == {"prompt_len": longest, "max_new_tokens": 5, "limit": 6}


def test_config_rejects_an_unknown_generation_path() -> None:
    with pytest.raises(C.ConfigError, match=r"generation='statik'.*did you mean 'static'"):
        C.build_config(preset="tiny", overrides=["generation=statik"])
