"""CLI errors are one line with exit code 2, found before any work starts (no model loaded, no
step run, nothing written); bad rows found at load time in both ``on_bad_rows`` modes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm.train import main
from tests.test_llm_train import read_metrics, shared_tiny_model

SMALL = dict(prompts_per_step=4, group_size=4, max_new_tokens=3, minibatch_size=8, total_steps=1,
             tiny_task_size=64, progress="false", tensorboard="false")  # fmt: skip


def argv(out: Path, **sets) -> list[str]:
    items = ["--preset", "tiny", "--out", str(out)]
    for k, v in {"model": shared_tiny_model(), **SMALL, **sets}.items():
        items += ["--set", f"{k}={v}"]
    return items


def our_lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    return [line for line in err.splitlines() if line.startswith("ticgrpo ")]


def surrogate_data(tmp_path: Path) -> Path:
    rows = [json.dumps({"problem": f"repeat {i}", "answer": str(i)}) for i in range(8)]
    rows.insert(1, '{"problem": "repeat \\ud800", "answer": "1"}')
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_a_lone_surrogate_row_fails_at_load_time_or_is_skipped(tmp_path, capsys):
    data = surrogate_data(tmp_path)
    run = tmp_path / "run"
    capsys.readouterr()
    assert main(argv(run, train_data=data, reward="tiny_task")) == 2
    (line,) = our_lines(capsys)
    assert f"{data}: row 1 (line 2): field 'problem': contains a lone UTF-16 surrogate" in line
    assert not (run / "metrics.jsonl").exists()  # stopped before the first step
    skip = tmp_path / "skip"
    assert main(argv(skip, train_data=data, reward="tiny_task", on_bad_rows="skip")) == 0
    assert read_metrics(skip)[0]["data/skipped_rows"] == 1


def test_out_that_is_a_file_and_config_that_is_a_folder(tmp_path, capsys):
    afile = tmp_path / "file"
    afile.write_text("keep me")
    capsys.readouterr()
    assert main(argv(afile)) == 2
    assert our_lines(capsys) == [
        f"ticgrpo train: --out {afile} is a file: give a folder for the run"
    ]
    assert afile.read_text() == "keep me"
    assert main(["--config", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    (line,) = our_lines(capsys)
    assert "is a folder: give a YAML file" in line
    assert main(["--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "r")]) == 2
    assert "does not exist" in our_lines(capsys)[0]
    assert main(["--start-over", "--out", str(tmp_path / "r")]) == 2
    assert main(["--resume", "--overwrite", "--out", str(tmp_path / "r")]) == 2
    assert not (tmp_path / "r").exists()


def test_a_checkpoint_that_does_not_fit_is_one_line(tmp_path, capsys):
    import torch

    from llm.runstate.checkpoint import save_checkpoint

    run = tmp_path / "run"
    assert main(argv(run)) == 0
    save_checkpoint(run, 1, model=torch.nn.Linear(2, 2), optimizer=None,
                    trainer_state={"step": 1})  # fmt: skip  # a valid checkpoint of another model
    config = (run / "config.yaml").read_bytes()
    capsys.readouterr()
    assert main(["--out", str(run), "--resume", "--set", "total_steps=2"]) == 2
    (line,) = our_lines(capsys)
    assert "model.safetensors does not fit the model" in line
    assert (run / "config.yaml").read_bytes() == config  # not rewritten by a failed resume
    assert [r["step"] for r in read_metrics(run)] == [1]


def test_an_out_folder_that_cannot_be_created_is_one_line(capsys):
    out = Path("/proc/ticgrpo-no-such-dir/run")  # not creatable, even by root
    capsys.readouterr()
    assert main(argv(out)) == 2
    (line,) = our_lines(capsys)
    assert line.startswith(f"ticgrpo train: --out {out}: cannot ")


def test_resume_of_a_folder_that_does_not_exist(tmp_path, capsys):
    capsys.readouterr()
    assert main(["--out", str(tmp_path / "nope"), "--resume"]) == 2
    (line,) = our_lines(capsys)
    assert (
        line == f"ticgrpo train: --resume: {tmp_path / 'nope'} does not exist (nothing to continue)"
    )
    assert not (tmp_path / "nope").exists()


# --------------------------------------------------------------------------- ticgrpo eval


@pytest.fixture
def eval_data(tmp_path) -> Path:
    path = tmp_path / "eval.jsonl"
    path.write_text(json.dumps({"problem": "repeat 1", "answer": "1"}) + "\n")
    return path


def test_eval_argument_errors_come_before_any_work(tmp_path, capsys, eval_data):
    from llm.evaluate import main as eval_main

    base = ["--model", str(shared_tiny_model()), "--data", str(eval_data), "--k", "1",
            "--max-new-tokens", "2"]  # fmt: skip
    capsys.readouterr()
    assert eval_main([*base, "--checkpoint", str(tmp_path / "missing")]) == 2
    (line,) = our_lines(capsys)
    assert line.startswith(f"ticgrpo eval: --checkpoint {tmp_path / 'missing'}: no such folder")
    empty = tmp_path / "empty_run"
    empty.mkdir()
    assert eval_main([*base, "--checkpoint", str(empty)]) == 2
    assert "no complete checkpoint" in our_lines(capsys)[0]
    afile = tmp_path / "out.json"
    afile.write_text("{}")
    assert eval_main([*base, "--out", str(afile)]) == 2
    (line,) = our_lines(capsys)
    assert line == f"ticgrpo eval: --out {afile} is a file: give a folder for the results"


def test_ctrl_c_in_any_command_is_one_line_and_code_130(monkeypatch, capsys):
    import sys
    import types

    from ticgrpo import cli

    def interrupted(argv):
        raise KeyboardInterrupt

    fake = types.ModuleType("fake_command")
    fake.main = interrupted
    monkeypatch.setitem(sys.modules, "fake_command", fake)
    monkeypatch.setitem(cli.COMMANDS, "fake", ("fake_command", "a command that is interrupted"))
    assert cli.main(["fake"]) == 130
    assert capsys.readouterr().err == "ticgrpo fake: interrupted\n"
