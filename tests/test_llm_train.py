"""End-to-end trainer tests on the tiny preset (CPU, a few steps each), and update identities."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import tempfile
from pathlib import Path

import pytest
import torch

from llm.config import build as C
from llm.config.presets import get_preset
from llm.train import main, train

TIMING = ("timing/", "tokens_per_s")
REQUIRED_KEYS = (
    "step", "reward/mean", "reward/std", "frac_reward_zero_std", "completions/mean_length",
    "completions/clipped_ratio", "entropy", "kl", "clip_ratio/low", "clip_ratio/high",
    "log_ratio/traj_mean", "log_ratio/traj_min", "log_ratio/traj_max", "ess/traj",
    "ess/traj_frac", "grad_norm", "lr", "timing/generate_s", "timing/update_s", "timing/step_s",
    "tokens_per_s", "skipped_steps",
)  # fmt: skip


@functools.lru_cache(maxsize=1)
def shared_tiny_model() -> Path:
    """The tiny model and tokenizer, built once per test session (other test files reuse it)."""
    from llm.data.tiny import build_tiny

    return build_tiny(Path(tempfile.mkdtemp(prefix="ticgrpo-tiny-")) / "model", seed=0)


@pytest.fixture
def tiny_model() -> Path:
    return shared_tiny_model()


def tiny_cfg(model: Path | str = "tiny", **overrides) -> C.TrainConfig:
    """The tiny preset shrunk for tests: 4 prompts × 4 samples, 3 new tokens, 2 steps."""
    small = dict(
        model=str(model), prompts_per_step=4, group_size=4, max_new_tokens=3, minibatch_size=8,
        total_steps=2, tiny_task_size=64, eval_data="", samples_every=0, save_every=0,
        tensorboard=False, progress=False, num_threads=1,
    )  # fmt: skip
    small.update(overrides)
    cfg = C.apply_overrides(C.TrainConfig(), {**get_preset("tiny"), **small}, where="test")
    return C.validate(cfg)


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def strip_timing(rows: list[dict]) -> list[dict]:
    """Rows without wall-clock values (timing/*, tokens_per_s, eval/generate_s)."""
    return [
        {k: v for k, v in r.items() if not (k.startswith(TIMING) or k.endswith("_s"))} for r in rows
    ]


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    from llm.runstate.checkpoint import latest_checkpoint

    return load_file(str(latest_checkpoint(run_dir) / "model.safetensors"))


METHOD_CASES = [
    {"method": "grpo"},
    {"method": "tic_grpo"},
    {"method": "tic_grpo", "tic_clip": "ppo"},
    {"method": "gspo"},
    {"method": "dapo"},
    {"method": "dr_grpo"},
    {"method": "pg"},
    {"method": "grpo", "no_is": True},
    {"method": "grpo", "beta": 0.05, "optimizer": "sgd", "lr": 0.05},
]


@pytest.mark.parametrize("case", METHOD_CASES, ids=lambda c: "-".join(f"{v}" for v in c.values()))
def test_each_method_trains_end_to_end(case, tiny_model, tmp_path):
    cfg = tiny_cfg(tiny_model, epochs_per_rollout=2, **case)
    from safetensors.torch import load_file

    before = load_file(str(tiny_model / "model.safetensors"))
    last = train(cfg, tmp_path)
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2]
    for key in REQUIRED_KEYS:
        assert key in rows[-1], key
        assert math.isfinite(rows[-1][key]), key
    assert rows[-1]["update/inner_steps"] == 4  # 2 epochs × 16/8 mini-batches
    assert 0 <= rows[-1]["update/padding_frac"] < 1
    assert rows[-1]["skipped_steps"] == 0 and last["step"] == 2
    after = final_weights(tmp_path)
    assert any(not torch.equal(before[k], after[k]) for k in after if k in before)
    assert C.load_yaml(tmp_path / "config.yaml")["method"] == case["method"]
    if case["method"] == "dapo":
        assert "dynamic_sampling/rounds" in rows[-1]
    if case.get("beta"):
        assert rows[-1]["kl"] >= 0


def test_cli_builds_tiny_model_and_data(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["--preset", "tiny", "--out", str(run), "--set", "total_steps=1", "--set",
            "prompts_per_step=2", "--set", "group_size=2", "--set", "minibatch_size=4",
            "--set", "max_new_tokens=2", "--set", "eval_limit=2", "--set", "eval_k=2",
            "--set", "tiny_task_size=16", "--set", "progress=false", "--set", "tensorboard=false",
            "--set", "samples_every=1", "--set", "num_samples_shown=1"]  # fmt: skip
    assert main(argv) == 0
    for name in ("config.yaml", "metrics.jsonl", "samples.jsonl", "tiny_model/config.json",
                 "data/train.jsonl", "data/eval.jsonl"):  # fmt: skip
        assert (run / name).exists(), name
    row = read_metrics(run)[0]
    assert "eval/avg@2" in row and "eval/pass@2" in row
    assert "completion" in capsys.readouterr().out
    # a second fresh run into the same folder would overwrite it: refused, nothing loaded
    assert main(argv) == 2
    assert "--resume" in capsys.readouterr().err


def test_invalid_config_fails_before_loading(tmp_path, capsys):
    code = main(["--out", str(tmp_path / "r"), "--set", "minibatch_size=7", "--set", "metod=pg"])
    err = capsys.readouterr().err
    assert code == 2
    assert "minibatch_size=7 must divide" in err and "did you mean 'method'" in err
    assert not (tmp_path / "r").exists()


def test_sgd_no_is_applies_one_gradient_k_times(tiny_model, tmp_path):
    """No-IS with plain SGD and no clipping: K steps move θ by exactly K × the first step."""
    base = dict(method="grpo", no_is=True, optimizer="sgd", lr=0.1, max_grad_norm=0.0,
                total_steps=1, minibatch_size=4)  # fmt: skip
    theta0 = {k: v.clone() for k, v in _load(tiny_model).items()}
    deltas = {}
    for epochs in (1, 3):
        run = tmp_path / f"e{epochs}"
        train(tiny_cfg(tiny_model, epochs_per_rollout=epochs, **base), run)
        deltas[epochs] = {k: v - theta0[k] for k, v in final_weights(run).items() if k in theta0}
    moved = [k for k in deltas[1] if deltas[1][k].abs().max() > 0]
    assert moved
    for k in moved:  # K = epochs · 16/4
        torch.testing.assert_close(deltas[3][k], 3 * deltas[1][k], rtol=1e-4, atol=1e-7)


def test_microbatches_accumulate_to_the_minibatch_gradient(tiny_model, tmp_path):
    """Explicit global normalisers: micro-batches of 2 give the same update as one pass of 8."""
    out = {}
    for method in ("grpo", "dapo", "dr_grpo"):
        for micro in (0, 2):
            run = tmp_path / f"{method}-{micro}"
            cfg = tiny_cfg(
                tiny_model,
                method=method,
                optimizer="sgd",
                lr=0.5,
                total_steps=1,
                max_grad_norm=0.0,
                microbatch_size=micro,
                dynamic_sampling=False,
            )
            train(cfg, run)
            out[micro] = final_weights(run)
        for k in out[0]:
            torch.testing.assert_close(out[2][k], out[0][k], rtol=1e-4, atol=1e-6)


def _load(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_config_is_saved_resolved(tiny_model, tmp_path):
    cfg = tiny_cfg(tiny_model, method="dapo", total_steps=1)
    train(cfg, tmp_path)
    saved = C.build_config(config_file=str(tmp_path / "config.yaml"))
    assert saved == cfg
    assert saved.eps_high == 0.28 and saved.aggregation == "token_mean" and saved.dynamic_sampling
    assert dataclasses.asdict(saved)["overlong_buffer"] == 0  # max_new_tokens 3 // 5
