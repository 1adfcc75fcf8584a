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


def _start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "ticgrpo.cli", "train", *args]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def _wait_for_lines(proc: subprocess.Popen, path: Path, n: int) -> None:
    deadline = time.monotonic() + 120
    while _lines(path) < n:
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.monotonic() < deadline, f"the run never reached step {n}"
        time.sleep(0.005)


def _our_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("ticgrpo train:")]


def test_sigint_saves_at_the_next_step_and_resume_matches_uninterrupted(tmp_path):
    """Ctrl-C with save_every=0: the run stops after the current step, saves it, exits 130 with
    one line, and --resume then reproduces the uninterrupted run exactly."""
    model, steps = shared_tiny_model(), 12
    args = [*_args(model), "--set", "save_every=0", "--set", f"total_steps={steps}"]
    full, stopped = tmp_path / "full", tmp_path / "stopped"
    assert main([*args, "--out", str(full)]) == 0
    proc = _start([*args, "--out", str(stopped)])
    try:
        _wait_for_lines(proc, stopped / "metrics.jsonl", 3)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    ours = _our_lines(proc.stderr.read())
    assert code == 128 + signal.SIGINT, ours
    done = _lines(stopped / "metrics.jsonl")
    assert 3 <= done < steps
    assert ours[-1].startswith(f"ticgrpo train: stopped by SIGINT after step {done}"), ours
    assert "--resume" in ours[-1] and len(ours) == 2  # the notice, then the one-line result
    from llm.runstate.checkpoint import latest_checkpoint

    assert latest_checkpoint(stopped).name == f"step-{done:08d}"  # nothing since the last save
    assert main(["--out", str(stopped), "--resume"]) == 0
    assert strip_timing(read_metrics(full)) == strip_timing(read_metrics(stopped))
    wa, wb = final_weights(full), final_weights(stopped)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_second_sigterm_stops_at_once(tmp_path):
    """Steps of about a second (128 sequences of up to 128 tokens), so the second signal, sent
    as soon as the first is acknowledged, lands while the step is still running."""
    model = shared_tiny_model()
    args = [*_args(model), "--set", "save_every=0", "--set", "max_new_tokens=128",
            "--set", "prompts_per_step=16", "--set", "group_size=8", "--set",
            "minibatch_size=128", "--out", str(tmp_path / "run")]  # fmt: skip
    proc = _start(args)
    try:
        _wait_for_lines(proc, tmp_path / "run" / "metrics.jsonl", 1)
        proc.send_signal(signal.SIGTERM)
        notice = ""
        while "received" not in notice:
            notice = proc.stderr.readline()
            assert notice, "the process ended without acknowledging the first signal"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == -signal.SIGTERM  # killed by the signal itself, not a clean exit after saving
    assert elapsed < 5
    assert "stopped by" not in proc.stderr.read()
