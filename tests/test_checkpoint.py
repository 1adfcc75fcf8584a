"""Checkpoints: exact round trips, pruning, corruption fallback and a real SIGKILL mid-save."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from llm.runstate import checkpoint as ck
from llm.runstate.checkpoint import (
    CheckpointError,
    CheckpointWarning,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


def tiny_qwen2(seed: int, tie: bool = True) -> torch.nn.Module:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=tie,
    )
    return Qwen2ForCausalLM(cfg)


def make_opt(name: str, model: torch.nn.Module) -> torch.optim.Optimizer:
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    return torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)


def train(model, opt, n: int, sched=None) -> list[float]:
    """n steps whose data and loss scale draw from all three global RNGs, so a wrong RNG
    restore changes the trajectory."""
    losses = []
    for _ in range(n):
        ids = torch.randint(0, 64, (2, 8))
        scale = float(np.random.rand()) + random.random()
        loss = model(input_ids=ids, labels=ids).loss * scale
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        losses.append(loss.item())
    return losses


def linear(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Linear(8, 8)


def save_linear(run: Path, step: int) -> Path:
    return save_checkpoint(
        run, step, model=linear(step), optimizer=None, trainer_state={"step": step}
    )


# --------------------------------------------------------------------------------------------
# exact round trips


@pytest.mark.parametrize("opt_name,tie", [("adamw", True), ("sgd", False)])
def test_resume_continues_exactly(tmp_path, opt_name, tie):
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    model = tiny_qwen2(0, tie)
    opt = make_opt(opt_name, model)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    train(model, opt, 3, sched)
    state = {"data_pos": 4}
    save_checkpoint(tmp_path, 3, model=model, optimizer=opt, trainer_state=state, scheduler=sched)
    ref_losses = train(model, opt, 3, sched)
    ref_params = {k: v.clone() for k, v in model.state_dict().items()}

    torch.manual_seed(99), np.random.seed(99), random.seed(99)  # scramble every stream
    model2 = tiny_qwen2(123, tie)
    opt2 = make_opt(opt_name, model2)
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=2, gamma=0.5)
    assert load_checkpoint(tmp_path, model=model2, optimizer=opt2, scheduler=sched2) == state
    assert sched2.last_epoch == 3
    assert train(model2, opt2, 3, sched2) == ref_losses
    assert sched2.get_last_lr() == sched.get_last_lr()
    for k, v in model2.state_dict().items():
        assert torch.equal(v, ref_params[k]), k


def test_rng_streams_and_generators_roundtrip(tmp_path):
    gen = torch.Generator().manual_seed(5)
    torch.rand(3, generator=gen)
    save_checkpoint(
        tmp_path, 0, model=linear(0), optimizer=None, trainer_state={}, generators={"data": gen}
    )

    def draws():
        return (
            random.random(),
            random.gauss(0, 1),
            np.random.rand(4).tolist(),
            np.random.randn(),
            torch.rand(4).tolist(),
            torch.rand(4, generator=gen).tolist(),
        )

    first = draws()
    draws()  # move every stream on
    gen2 = torch.Generator().manual_seed(0)
    load_checkpoint(tmp_path, model=None, optimizer=None, generators={"data": gen2})
    gen = gen2
    assert draws() == first
    with pytest.raises(CheckpointError, match="'other'"):
        load_checkpoint(tmp_path, model=None, optimizer=None, generators={"other": gen2})


def test_optimizer_state_equal_after_load(tmp_path):
    model = tiny_qwen2(0)
    opt = make_opt("adamw", model)
    train(model, opt, 1)
    save_checkpoint(tmp_path, 1, model=model, optimizer=opt, trainer_state={})
    model2 = tiny_qwen2(1)
    opt2 = make_opt("adamw", model2)
    load_checkpoint(tmp_path, model=model2, optimizer=opt2, restore_rng=False)
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert s1.keys() == s2.keys()
    for i in s1:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(s1[i][name], s2[i][name])


# --------------------------------------------------------------------------------------------
# layout, pruning, pointer


def test_keep_prunes_old_and_points_latest(tmp_path):
    for step in range(1, 6):
        path = save_linear(tmp_path, step)
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-00000004", "step-00000005"]
    assert (root / "latest").read_text().strip() == path.name
    assert latest_checkpoint(tmp_path) == path
    assert verify_checkpoint(path) == []


def test_resume_from_earlier_step_follows_pointer(tmp_path):
    """After resuming from step 2 and saving step 3, the abandoned step 4 is not loaded."""
    for step in (2, 4):
        save_checkpoint(
            tmp_path, step, model=linear(step), optimizer=None, trainer_state={"s": step}, keep=5
        )
    save_checkpoint(tmp_path, 3, model=linear(3), optimizer=None, trainer_state={"s": 3}, keep=5)
    assert load_checkpoint(tmp_path, model=None, optimizer=None) == {"s": 3}


def test_resave_same_step_replaces(tmp_path):
    save_checkpoint(tmp_path, 1, model=linear(1), optimizer=None, trainer_state={"v": 1})
    save_checkpoint(tmp_path, 1, model=linear(2), optimizer=None, trainer_state={"v": 2})
    m = linear(0)
    assert load_checkpoint(tmp_path, model=m, optimizer=None) == {"v": 2}
    assert torch.equal(m.weight, linear(2).weight)


def test_bad_arguments_write_nothing(tmp_path):
    with pytest.raises(TypeError, match="JSON"):
        save_checkpoint(tmp_path, 1, model=linear(0), optimizer=None, trainer_state={"x": {1, 2}})
    with pytest.raises(ValueError, match="keep"):
        save_checkpoint(tmp_path, 1, model=linear(0), optimizer=None, trainer_state={}, keep=0)
    assert not (tmp_path / "checkpoints").exists()
    assert latest_checkpoint(tmp_path) is None
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        load_checkpoint(tmp_path, model=None, optimizer=None)


def test_model_mismatch_names_the_file(tmp_path):
    save_linear(tmp_path, 1)
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(tmp_path, model=torch.nn.Linear(8, 9), optimizer=None)


# --------------------------------------------------------------------------------------------
# corruption and injected crashes


def _truncate(p: Path):
    p.joinpath("model.safetensors").write_bytes(p.joinpath("model.safetensors").read_bytes()[:50])


def _flip(p: Path):
    data = bytearray(p.joinpath("model.safetensors").read_bytes())
    data[-3] ^= 0xFF
    p.joinpath("model.safetensors").write_bytes(bytes(data))


def _edit_manifest(edit):
    """A corruption that rewrites the parsed manifest with ``edit(manifest) -> manifest``."""

    def corrupt(p: Path):
        path = p / "manifest.json"
        path.write_text(json.dumps(edit(json.loads(path.read_text()))))

    return corrupt


def _drop_bytes(m):
    del m["files"]["model.safetensors"]["bytes"]
    return m


CORRUPTIONS = {
    "no_manifest": lambda p: p.joinpath("manifest.json").unlink(),
    "bad_manifest": lambda p: p.joinpath("manifest.json").write_text("{not json"),
    "binary_manifest": lambda p: p.joinpath("manifest.json").write_bytes(b"\xff\xfe{"),
    "manifest_a_list": _edit_manifest(lambda m: [m]),
    "files_a_list": _edit_manifest(lambda m: {**m, "files": list(m["files"])}),
    "missing_bytes_field": _edit_manifest(_drop_bytes),
    "bytes_a_string": _edit_manifest(
        lambda m: {
            **m,
            "files": {k: {**v, "bytes": str(v["bytes"])} for k, v in m["files"].items()},
        }
    ),
    "step_a_string": _edit_manifest(lambda m: {**m, "step": "two"}),
    "files_empty": _edit_manifest(lambda m: {**m, "files": {}}),
    "unsafe_name": _edit_manifest(
        lambda m: {**m, "files": {**m["files"], "../x": {"bytes": 0, "sha256": ""}}}
    ),
    "missing_file": lambda p: p.joinpath("rng.pt").unlink(),
    "truncated": _truncate,
    "flipped_byte": _flip,
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupt_newest_falls_back(tmp_path, kind):
    save_linear(tmp_path, 1)
    newest = save_linear(tmp_path, 2)
    CORRUPTIONS[kind](newest)
    assert verify_checkpoint(newest)
    m = linear(7)
    with pytest.warns(CheckpointWarning, match="step-00000002"):
        assert load_checkpoint(tmp_path, model=m, optimizer=None) == {"step": 1}
    assert torch.equal(m.weight, linear(1).weight)
    with pytest.raises(CheckpointError, match="step-00000002"):
        load_checkpoint(newest, model=m, optimizer=None)


def test_the_last_damaged_checkpoint_does_not_promise_an_older_one(tmp_path):
    _flip(save_linear(tmp_path, 1))
    with pytest.warns(CheckpointWarning, match="no older checkpoint left") as record:
        assert latest_checkpoint(tmp_path) is None
    assert not any("trying an older" in str(w.message) for w in record)


def test_a_folder_named_latest_does_not_crash_the_save(tmp_path):
    root = tmp_path / "checkpoints"
    (root / "latest").mkdir(parents=True)
    (root / "latest" / "notes.txt").write_text("user data")
    with pytest.warns(CheckpointWarning, match="was not a pointer file; moved it to"):
        save_linear(tmp_path, 1)
    assert (root / "latest").read_text() == "step-00000001\n"
    (aside,) = root.glob("latest.moved-aside-*")
    assert (aside / "notes.txt").read_text() == "user data"  # moved, not deleted
    assert load_checkpoint(tmp_path, model=None, optimizer=None) == {"step": 1}


def test_garbled_pointer_falls_back_to_newest_by_step(tmp_path):
    save_linear(tmp_path, 1)
    save_linear(tmp_path, 2)
    (tmp_path / "checkpoints" / "latest").write_text("\x00garbage")
    with pytest.warns(CheckpointWarning, match="pointer"):
        assert load_checkpoint(tmp_path, model=None, optimizer=None) == {"step": 2}


@pytest.mark.parametrize("fail_call", [1, 2])
def test_crash_at_publish_or_pointer_keeps_consistent_state(tmp_path, monkeypatch, fail_call):
    """An exception at the directory rename (1) or at the pointer rename (2) of save 2 leaves
    step 1 as the loaded checkpoint; the next save cleans the leftovers."""
    save_linear(tmp_path, 1)
    real_replace, calls = os.replace, []

    def flaky(src, dst):
        calls.append(dst)
        if len(calls) == fail_call:
            raise OSError("injected crash")
        return real_replace(src, dst)

    monkeypatch.setattr(ck.os, "replace", flaky)
    with pytest.raises(OSError, match="injected"):
        save_linear(tmp_path, 2)
    monkeypatch.setattr(ck.os, "replace", real_replace)
    assert load_checkpoint(tmp_path, model=None, optimizer=None) == {"step": 1}
    save_linear(tmp_path, 3)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert not [n for n in names if n.startswith(".") or n.endswith(".tmp")], names
    assert load_checkpoint(tmp_path, model=None, optimizer=None) == {"step": 3}


CHILD = textwrap.dedent(
    """
    import sys, torch
    from llm.runstate.checkpoint import save_checkpoint
    torch.set_num_threads(1)
    model = torch.nn.Sequential(*[torch.nn.Linear(1024, 1024) for _ in range(6)])  # 25 MB
    for step in range(1, 100000):
        gen = torch.Generator().manual_seed(step)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=gen))
        save_checkpoint(sys.argv[1], step, model=model, optimizer=None,
                        trainer_state={"step": step, "data_pos": 7 * step})
        print(step, flush=True)
    """
)


def _expected_model(step: int) -> torch.nn.Module:
    model = torch.nn.Sequential(*[torch.nn.Linear(1024, 1024) for _ in range(6)])
    gen = torch.Generator().manual_seed(step)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return model


def _kill_mid_save(run: Path, script: Path, delay: float) -> int:
    """Start the saving loop, wait for a published checkpoint and then for the next save to be
    under way (a `.tmp-*` folder), SIGKILL after `delay` s; return the last step it reported."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, str(script), str(run)], stdout=subprocess.PIPE, text=True, env=env
    )
    root = run / "checkpoints"
    deadline = time.monotonic() + 60
    try:
        while not (root / "latest").exists() or not list(root.glob(".tmp-*")):
            assert proc.poll() is None, "saving child exited early"
            assert time.monotonic() < deadline, "child never started a second save"
            time.sleep(0.001)
        time.sleep(delay)
    finally:
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    return int(out.split()[-1])


def test_sigkill_during_save_leaves_previous_checkpoint_loadable(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    left_partial = 0
    for trial, delay in enumerate((0.0, 0.02, 0.08)):
        run = tmp_path / f"run{trial}"
        reported = _kill_mid_save(run, script, delay)
        left_partial += bool(list((run / "checkpoints").glob(".tmp-*")))
        model = _expected_model(0)
        state = load_checkpoint(run, model=model, optimizer=None, restore_rng=False)
        step = state["step"]
        assert step >= reported and state == {"step": step, "data_pos": 7 * step}
        expected = _expected_model(step)
        for a, b in zip(model.parameters(), expected.parameters()):
            assert torch.equal(a, b)
    assert left_partial >= 1, "no kill landed inside a save: the test did not test anything"
    # the next save in a killed run cleans up what the killed one left
    save_linear(run, 10_000)
    assert not list((run / "checkpoints").glob(".tmp-*"))
    json.loads((run / "checkpoints" / "step-00010000" / "manifest.json").read_text())


@pytest.mark.slow
def test_sigkill_at_many_random_points(tmp_path):
    """12 kills at random instants of a save (uniform over 0-150 ms after it starts): every run
    loads a complete checkpoint equal to what was saved."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    rng = random.Random(0)
    for trial in range(12):
        run = tmp_path / f"run{trial}"
        reported = _kill_mid_save(run, script, rng.uniform(0.0, 0.15))
        model = _expected_model(0)
        state = load_checkpoint(run, model=model, optimizer=None, restore_rng=False)
        assert state["step"] >= reported
        for a, b in zip(model.parameters(), _expected_model(state["step"]).parameters()):
            assert torch.equal(a, b)
