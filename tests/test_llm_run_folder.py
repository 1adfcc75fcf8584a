"""The run folder stays the run's record: a resume with no usable checkpoint refuses and touches
nothing, damaged checkpoints are quarantined (never deleted), a fresh run never mixes into an
earlier one, one process writes a folder, and a resume may change only the resumable keys."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llm.config.resume import RESUMABLE
from llm.runstate.checkpoint import checkpoint_root, latest_checkpoint
from llm.runstate.run_folder import LOCK_NAME, RunFolderError, RunLock
from llm.train import main, train
from tests.test_llm_train import read_metrics, shared_tiny_model, tiny_cfg

ROOT = Path(__file__).resolve().parents[1]


def snapshot(run: Path) -> dict[str, str]:
    """Every file under ``run`` (but the lock file) -> sha256 of its bytes."""
    return {
        str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run.rglob("*"))
        if p.is_file() and p.name != LOCK_NAME
    }


def flip_byte(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def small_run(run: Path, **overrides) -> None:
    opts = {"total_steps": 2, "samples_every": 1, "num_samples_shown": 1, **overrides}
    train(tiny_cfg(shared_tiny_model(), **opts), run)


# --------------------------------------------------------------------------- resume: data loss


@pytest.mark.parametrize("case", ["one_flipped_byte_keep_1", "stopped_before_first_save"])
def test_resume_without_a_usable_checkpoint_refuses_and_touches_nothing(tmp_path, capsys, case):
    run = tmp_path / "run"
    small_run(run, keep_checkpoints=1)
    root = checkpoint_root(run)
    if case == "one_flipped_byte_keep_1":
        flip_byte(root / "step-00000002" / "model.safetensors")
    else:
        import shutil

        shutil.rmtree(root)
    before = snapshot(run)
    assert before["metrics.jsonl"] and before["samples.jsonl"]
    capsys.readouterr()
    assert main(["--out", str(run), "--resume", "--set", "total_steps=3"]) == 2
    err = capsys.readouterr().err
    assert "no usable checkpoint" in err and "nothing was changed" in err and "--start-over" in err
    assert len(err.strip().splitlines()) == 1
    assert snapshot(run) == before  # logs, samples, checkpoints, config: byte for byte

    # asked for explicitly: start over from step 1, the old files moved aside, not deleted
    assert main(["--out", str(run), "--resume", "--start-over", "--set", "total_steps=3"]) == 0
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3]
    (discarded,) = run.glob("discarded-*")
    kept = {k[len(discarded.name) + 1 :]: v for k, v in snapshot(run).items()
            if k.startswith(discarded.name)}  # fmt: skip
    assert kept == {
        k: v for k, v in before.items() if k.split("/")[0] not in ("config.yaml", "data")
    }


def test_a_damaged_checkpoint_is_quarantined_not_deleted(tmp_path, capsys):
    run = tmp_path / "run"
    small_run(run, total_steps=3, save_every=1, keep_checkpoints=2)
    root = checkpoint_root(run)
    flip_byte(root / "step-00000003" / "optimizer.pt")
    damaged = snapshot(root / "step-00000003")
    with pytest.warns(Warning, match="skipping checkpoint"):
        assert latest_checkpoint(run) == root / "step-00000002"
    assert main(["--out", str(run), "--resume", "--set", "total_steps=5"]) == 0
    err = capsys.readouterr().err
    moved = root / "quarantine" / "step-00000003"
    assert str(moved) in err and "sha256" in err
    assert snapshot(moved) == damaged  # byte for byte, after the re-save of step 3 and pruning
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3, 4, 5]
    assert latest_checkpoint(run) == root / "step-00000005"


# --------------------------------------------------------------------------- fresh runs, lock


def test_fresh_run_refuses_a_used_folder_unless_overwrite(tmp_path, capsys):
    run = tmp_path / "run"
    small_run(run, total_steps=1)
    before = snapshot(run)
    capsys.readouterr()
    argv = ["--preset", "tiny", "--set", f"model={shared_tiny_model()}", "--set", "total_steps=1",
            "--set", "tiny_task_size=64", "--set", "prompts_per_step=4", "--set", "group_size=4",
            "--set", "max_new_tokens=3", "--set", "minibatch_size=8", "--set", "progress=false", "--set",
            "tensorboard=false", "--out", str(run)]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "is not empty" in err and "--overwrite" in err and "--resume" in err
    assert snapshot(run) == before
    # a folder holding anything at all (not only a run) is refused too
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main([*argv[:-1], str(other)]) == 2
    assert (other / "notes.txt").read_text() == "mine"
    (run / "notes.txt").write_text("mine")
    assert main([*argv, "--overwrite", "--set", "seed=1"]) == 0
    assert [r["step"] for r in read_metrics(run)] == [1]  # not appended to the old run
    assert "seed: 1" in (run / "config.yaml").read_text()
    after = snapshot(run)
    assert after["data/train.jsonl"] != before["data/train.jsonl"]  # rebuilt, not reused
    assert (run / "notes.txt").read_text() == "mine"  # not the run's: kept


def test_one_writer_per_run_folder_and_a_crashed_owner_leaves_no_stale_lock(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    code = (
        "import sys, time; from llm.runstate.run_folder import RunLock; "
        f"lock = RunLock({str(run)!r}); print('held', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == b"held"
        with pytest.raises(RunFolderError, match=f"pid {proc.pid}"):
            RunLock(run)
        with pytest.raises(RunFolderError, match="in use by another training process"):
            train(tiny_cfg(shared_tiny_model(), total_steps=1), run)
        assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]  # nothing was written
    finally:
        proc.kill()  # SIGKILL: no clean-up code runs
        proc.wait()
    with RunLock(run):  # the kernel dropped the dead owner's lock
        assert (run / LOCK_NAME).read_text().strip() == str(os.getpid())


# --------------------------------------------------------------------------- resume config


def test_resume_refuses_changed_run_defining_keys_and_writes_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    small_run(run)
    before = snapshot(run)
    capsys.readouterr()
    changes = ["method=tic_grpo", "seed=3", "tiny_task=add", "group_size=8", "optimizer=sgd"]
    argv = ["--out", str(run), "--resume"]
    for item in changes:
        argv += ["--set", item]
    assert main(argv) == 2
    err = capsys.readouterr().err
    for key in ("method", "seed", "tiny_task", "group_size", "optimizer"):
        assert f"--resume cannot change {key}:" in err, key
    assert snapshot(run) == before  # config.yaml untouched, so a plain --resume still works
    assert main(["--out", str(run), "--resume", "--set", "total_steps=3"]) == 0
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3]


def test_resume_to_fewer_steps_than_the_checkpoint_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    small_run(run)
    before = snapshot(run)
    capsys.readouterr()
    assert main(["--out", str(run), "--resume", "--set", "total_steps=1"]) == 2
    err = capsys.readouterr().err
    assert "total_steps=1 is below the checkpoint's step 2" in err
    assert snapshot(run) == before


def test_empty_config_yaml_is_an_error_not_the_defaults(tmp_path, capsys):
    run = tmp_path / "run"
    small_run(run)
    (run / "config.yaml").write_text("")
    before = snapshot(run)
    assert main(["--out", str(run), "--resume", "--set", "total_steps=3"]) == 2
    assert "config.yaml is empty" in capsys.readouterr().err
    assert snapshot(run) == before


def test_resume_with_a_new_lr_reaches_the_optimizer(tmp_path):
    """lr is resumable and takes effect: the restored optimiser runs at the new rate, on the
    restored warmup schedule."""
    run = tmp_path / "run"
    small_run(run, lr=1e-3, warmup_steps=4, minibatch_size=16)
    assert main(["--out", str(run), "--resume", "--set", "total_steps=4", "--set", "lr=5e-2"]) == 0
    lrs = [r["lr"] for r in read_metrics(run)]
    # LambdaLR warmup (s+1)/4 at inner steps 0..3 (one inner step per rollout here)
    assert lrs == pytest.approx([1e-3 / 4, 2e-3 / 4, 5e-2 * 3 / 4, 5e-2])
    assert "lr: 0.05" in (run / "config.yaml").read_text()


def test_resumable_keys_are_real_fields():
    from llm.config.train_config import FIELDS

    assert RESUMABLE <= set(FIELDS)
    assert not {"method", "seed", "train_data", "optimizer", "group_size"} & RESUMABLE


def test_a_half_built_tiny_model_folder_is_rebuilt(tmp_path):
    """A build interrupted before the tokenizer was written left config.json and weights only;
    the next run rebuilds the folder (same seed, same files) instead of failing to load it."""
    from llm.runstate.setup import TINY_MODEL_FILES, ensure_tiny_model

    good = ensure_tiny_model(tmp_path / "good" / "tiny_model", seed=0)
    assert all((good / f).is_file() for f in TINY_MODEL_FILES)
    half = tmp_path / "half" / "tiny_model"
    half.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (half / name).write_bytes((good / name).read_bytes())
    assert ensure_tiny_model(half, seed=0) == half
    assert snapshot(half) == snapshot(good)
    assert not list(half.parent.glob(".tiny_model.tmp-*"))  # built aside, renamed into place
    before = {p: p.stat().st_mtime_ns for p in half.iterdir()}
    ensure_tiny_model(half, seed=0)  # complete: left alone
    assert {p: p.stat().st_mtime_ns for p in half.iterdir()} == before


def test_a_damaged_folder_of_an_abandoned_timeline_is_quarantined_too(tmp_path):
    """`latest` says step 2, a damaged step-3 folder lies beyond it: the resume's re-save of
    step 3 would replace it, so it is moved to quarantine first."""
    run = tmp_path / "run"
    small_run(run, total_steps=3, save_every=1, keep_checkpoints=3)
    root = checkpoint_root(run)
    (root / "latest").write_text("step-00000002\n")
    flip_byte(root / "step-00000003" / "model.safetensors")
    damaged = snapshot(root / "step-00000003")
    assert main(["--out", str(run), "--resume", "--set", "progress=false"]) == 0
    assert snapshot(root / "quarantine" / "step-00000003") == damaged
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3]
