"""A real crash: `ticgrpo train` SIGKILLed mid-run, then `--resume`, equals the uninterrupted run.

Checkpoints are saved every step, so the kill lands during training or inside a save; either way
the run must resume from the newest complete checkpoint and reproduce the uninterrupted run's
metrics and weights exactly (CPU).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from llm.train import main
from tests.test_llm_train import final_weights, read_metrics, shared_tiny_model, strip_timing

ROOT = Path(__file__).resolve().parents[1]
STEPS = 30


def _args(model: Path) -> list[str]:
    sets = dict(
        model=model, prompts_per_step=4, group_size=4, max_new_tokens=3, minibatch_size=8,
        tiny_task_size=64, eval_data="", samples_every=0, tensorboard="false", progress="false",
        save_every=1, keep_checkpoints=2, total_steps=STEPS, method="tic_grpo",
    )  # fmt: skip
    out = ["--preset", "tiny"]
    for k, v in sets.items():
        out += ["--set", f"{k}={v}"]
    return out


def _lines(path: Path) -> int:
    try:
        return len(path.read_text().splitlines())
    except FileNotFoundError:
        return 0


def test_sigkill_mid_run_then_resume_matches_uninterrupted(tmp_path):
    model = shared_tiny_model()
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert main([*_args(model), "--out", str(full)]) == 0

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "ticgrpo.cli", "train", *_args(model), "--out", str(killed)]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        while _lines(killed / "metrics.jsonl") < 3:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the run never reached step 3"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    done = _lines(killed / "metrics.jsonl")
    print(f"killed after {done} logged steps")
    assert 3 <= done < STEPS, f"the kill came too late to test anything ({done} steps logged)"

    assert main(["--out", str(killed), "--resume"]) == 0
    a, b = strip_timing(read_metrics(full)), strip_timing(read_metrics(killed))
    assert [r["step"] for r in b] == list(range(1, STEPS + 1))
    assert a == b
    wa, wb = final_weights(full), final_weights(killed)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
