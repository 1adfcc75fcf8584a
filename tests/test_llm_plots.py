"""`ticgrpo plot`: overlays of several runs, labels from config.yaml, clear file:line errors."""

from __future__ import annotations

import json
import math

import pytest

from analysis.llm_plots import Run, load_run, main, read_metrics, series

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_run(root, name, method, n=20, slope=0.03, eval_every=5):
    run = root / name
    run.mkdir()
    (run / "config.yaml").write_text(f"model: tiny\nalgo:\n  method: {method}\n  lr: 0.1\n")
    with open(run / "metrics.jsonl", "w") as f:
        for step in range(1, n + 1):
            rec = {
                "step": step,
                "reward/mean": min(1.0, 0.1 + slope * step),
                "completions/mean_length": 10 + step,
                "clip_ratio/low": 0.01,
                "clip_ratio/high": 0.02 * (step % 3),
                "log_ratio/traj_mean": 0.001 * step,
                "log_ratio/traj_max": None if step == 4 else 0.01 * step,
                "ess/traj_frac": 1 - 0.01 * step,
                "timing/step_s": 0.5,
            }
            if step % eval_every == 0:
                rec["eval/avg@4"] = 0.05 * step
                rec["eval/avg@4_se"] = 0.01
                rec["eval/pass@1"] = 0.05 * step
                rec["eval/pass@4"] = 0.08 * step
            f.write(json.dumps(rec) + "\n")
    return run


def test_plots_two_runs_overlaid(tmp_path, capsys):
    a = write_run(tmp_path, "run_a", "grpo")
    b = write_run(tmp_path, "run_b", "tic_grpo", slope=0.05)
    out = tmp_path / "plots"
    assert main([str(a), str(b), "--out", str(out)]) == 0
    stems = ["curves", "reward", "eval_accuracy", "completion_length", "clip_ratio"]
    stems += ["traj_log_ratio", "ess"]
    for stem in stems:
        assert (out / f"{stem}.png").read_bytes()[:8] == PNG_MAGIC
        assert (out / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"
    data = json.loads((out / "plot_data.json").read_text())
    assert [r["label"] for r in data["runs"]] == ["grpo", "tic_grpo"]
    reward = data["panels"]["reward"]
    assert set(reward) == {"grpo", "tic_grpo"}
    assert reward["tic_grpo"]["reward/mean"]["value"][0] == pytest.approx(0.15)
    assert data["panels"]["eval_accuracy"]["grpo"]["eval/avg@4"]["step"] == [5, 10, 15, 20]
    # the standard error is the band around avg@k, not a line; pass@1 duplicates avg@k
    assert set(data["panels"]["eval_accuracy"]["grpo"]) == {"eval/avg@4", "eval/pass@4"}
    assert data["panels"]["eval_accuracy"]["grpo"]["eval/avg@4"]["se"] == [0.01] * 4
    assert data["panels"]["traj_log_ratio"]["grpo"]["log_ratio/traj_max"]["value"][3] is None
    assert set(data["panels"]["clip_ratio"]["grpo"]) == {"clip_ratio/low", "clip_ratio/high"}


def test_same_method_labels_are_disambiguated_and_default_out(tmp_path, monkeypatch):
    a = write_run(tmp_path, "seed0", "grpo")
    b = write_run(tmp_path, "seed1", "grpo")
    monkeypatch.chdir(tmp_path)
    assert main([str(a), str(b), "--keys", "reward/mean", "timing/*"]) == 0
    data = json.loads((tmp_path / "plots" / "plot_data.json").read_text())
    assert [r["label"] for r in data["runs"]] == ["grpo [seed0]", "grpo [seed1]"]
    assert set(data["panels"]) == {"reward_mean", "timing_x"}
    assert main([str(a)]) == 0  # one run: plots go inside the run folder
    assert (a / "plots" / "curves.png").is_file()


def test_label_falls_back_to_folder_name(tmp_path):
    run = write_run(tmp_path, "myrun", "grpo")
    (run / "config.yaml").unlink()
    assert load_run(str(run / "metrics.jsonl")).label == "myrun"


def test_series_dedupes_steps_and_smooths():
    recs = [{"step": 2, "x": 4.0}, {"step": 1, "x": 1.0}, {"step": 2, "x": 2.0}, {"step": 3}]
    steps, values = series(recs, "x")
    assert steps.tolist() == [1, 2] and values.tolist() == [1.0, 2.0]
    recs = [{"step": i, "x": v} for i, v in enumerate([1.0, None, 3.0, 5.0])]
    _, sm = series(recs, "x", smooth=2)
    assert sm[0] == 1.0 and sm[1] == 1.0 and sm[2] == 3.0 and sm[3] == 4.0
    _, raw = series(recs, "x")
    assert math.isnan(raw[1])


@pytest.mark.parametrize(
    "content,message",
    [
        (
            '{"step": 1, "a": 1}\n{"step": 2, "a": \n{"step": 3}\n',
            "metrics.jsonl:2: not valid JSON",
        ),
        ('{"step": 1}\n[1, 2]\n', "metrics.jsonl:2: expected a JSON object"),
        ('{"step": 1}\n\n{"a": 1}\n', "metrics.jsonl:3: missing or non-integer 'step'"),
        ('{"step": "3"}\n', "metrics.jsonl:1: missing or non-integer 'step'"),
        ("\n\n", "metrics.jsonl: no metrics lines"),
    ],
)
def test_malformed_metrics_name_file_and_line(tmp_path, capsys, content, message):
    run = tmp_path / "bad"
    run.mkdir()
    (run / "metrics.jsonl").write_text(content)
    assert main([str(run)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(run) in err


def test_torn_last_line_is_skipped_with_warning(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "reward/mean": 0.5}\n{"step": 2, "rew')
    with pytest.warns(UserWarning, match="metrics.jsonl:2: incomplete"):
        assert read_metrics(path) == [{"step": 1, "reward/mean": 0.5}]


def test_missing_files_and_bad_config(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert "nope: no such file" in capsys.readouterr().err
    assert main([str(tmp_path)]) == 2
    assert "metrics.jsonl: missing" in capsys.readouterr().err
    run = write_run(tmp_path, "r", "grpo")
    (run / "config.yaml").write_text("method: [unclosed\n")
    assert main([str(run)]) == 2
    assert "config.yaml: not valid YAML" in capsys.readouterr().err
    (run / "config.yaml").write_text("method: grpo\n")
    assert main([str(run), "--keys", "no/such_key"]) == 2
    assert "none of the runs logged" in capsys.readouterr().err


def test_run_keys_helper():
    assert Run(path=None, label="x", records=[{"step": 1, "a": 1}]).keys() == {"step", "a"}
