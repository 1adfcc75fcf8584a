"""`ticgrpo study`: every arm of the paper's comparison end to end on CPU with the tiny model,
identical data order and first rollout across arms, the summary table, resume/skip, plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis.llm_plots import load_study
from analysis.llm_plots import main as plot_main
from llm.study import ARMS, StudyError, build_arm_configs, parse_arms
from llm.study import main as study_main

#: The tiny preset shrunk: 4 prompts × 4 samples, 3 new tokens, 2 steps, K = 2 inner steps (so
#: the ratios leave 1 and the arms differ), an evaluation at the end.
SMALL = [
    "prompts_per_step=4", "group_size=4", "max_new_tokens=3", "minibatch_size=8",
    "total_steps=2", "tiny_task_size=64", "eval_every=0", "eval_k=2", "eval_limit=8",
    "samples_every=1", "num_samples_shown=4", "save_every=0", "tensorboard=false",
    "progress=false", "lr=5e-3",
]  # fmt: skip


def _argv(out: Path, *extra: str) -> list[str]:
    argv = ["--preset", "tiny", "--out", str(out)]
    for s in SMALL:
        argv += ["--set", s]
    return argv + list(extra)


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "s"
    assert study_main(_argv(out)) == 0
    return out


def test_every_arm_runs_with_the_same_data_and_seeds(study):
    meta = json.loads((study / "study.json").read_text())
    assert meta["arms"] == list(ARMS)
    samples = {a: _lines(study / a / "samples.jsonl") for a in ARMS}
    metrics = {a: _lines(study / a / "metrics.jsonl") for a in ARMS}
    for arm in ARMS:
        cfg = (study / arm / "config.yaml").read_text()
        assert f'method: "{ARMS[arm][1]["method"]}"' in cfg
        assert [m["step"] for m in metrics[arm]] == [1, 2]
    # the prompts of every step are the same in every arm (the data order is shared) ...
    prompts = {a: [(r["step"], r["prompt"]) for r in samples[a]] for a in ARMS}
    assert len(prompts["grpo"]) == 8 and all(prompts[a] == prompts["grpo"] for a in ARMS)
    # ... and so is the first rollout (same initial weights, same sampling seed)
    first = {a: [r for r in samples[a] if r["step"] == 1] for a in ARMS}
    assert all(first[a] == first["grpo"] for a in ARMS)
    assert len({metrics[a][0]["reward/mean"] for a in ARMS}) == 1
    # the arms are different estimators: their updates, hence later rollouts, differ
    later = {json.dumps([m["loss/policy"] for m in metrics[a]]) for a in ARMS}
    assert len(later) == len(ARMS)
    no_is = (study / "no_is" / "config.yaml").read_text()
    assert "no_is: true" in no_is and 'method: "grpo"' in no_is


def test_summary_table_matches_the_runs(study):
    summary = json.loads((study / "study_summary.json").read_text())
    md = (study / "study_summary.md").read_text()
    rows = {r["arm"]: r for r in summary["arms"]}
    assert list(rows) == list(ARMS)
    for arm, row in rows.items():
        recs = _lines(study / arm / "metrics.jsonl")
        assert row["steps"] == 2 and row["label"] == ARMS[arm][0]
        assert row["reward_last"] == pytest.approx(recs[-1]["reward/mean"])  # last tenth: 1 step
        assert row["eval_key"] == "eval/avg@2"
        assert row["eval"] == pytest.approx(recs[-1]["eval/avg@2"])
        assert f"| {ARMS[arm][0]} | 2 |" in md
    plots = study / "plots"
    assert (plots / "curves.png").is_file()
    data = json.loads((plots / "plot_data.json").read_text())
    assert [r["label"] for r in data["runs"]] == [label for label, _ in ARMS.values()]


def test_rerun_skips_finished_arms_and_refuses_other_settings(study, capsys):
    before = (study / "grpo" / "metrics.jsonl").read_text()
    assert study_main(_argv(study, "--arms", "grpo,tic_grpo")) == 0
    assert "grpo: done, skipped" in capsys.readouterr().out
    assert (study / "grpo" / "metrics.jsonl").read_text() == before
    assert study_main(_argv(study, "--set", "lr=1e-3")) == 2
    assert "was started with" in capsys.readouterr().err
    assert study_main(["--out", str(study), "--summary-only"]) == 0


def test_plot_overlays_a_study_folder(study, tmp_path):
    runs = load_study(study)
    assert [r.label for r in runs] == [label for label, _ in ARMS.values()]
    assert plot_main([str(study), "--out", str(tmp_path / "p")]) == 0
    assert (tmp_path / "p" / "reward.png").is_file()
    # one legend entry per arm (colour) and one per key (line style), not arms × keys
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from analysis.llm_plots import draw_panel

    fig, ax = plt.subplots()
    keys = ["clip_ratio/low", "clip_ratio/high", "clip_ratio/region"]
    draw_panel(ax, runs, keys, "clip", smooth=1)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    plt.close(fig)
    assert legend == [label for label, _ in ARMS.values()] + keys


def test_torchrun_launches_train_one_arm_each(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert study_main(_argv(tmp_path / "s", "--arms", "grpo,gspo")) == 2
    assert "one arm per launch" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_arm_selection_and_arm_keys_are_checked():
    assert parse_arms("tic_grpo, grpo") == ["grpo", "tic_grpo"]  # ARMS order
    with pytest.raises(StudyError, match="unknown arm"):
        parse_arms("grpo,tic")
    with pytest.raises(StudyError, match="what each arm sets"):
        build_arm_configs("tiny", None, ["method=gspo"], ["grpo"])
    cfgs = build_arm_configs("tiny", None, [], list(ARMS))
    assert cfgs["no_is"].no_is and cfgs["no_is"].method == "grpo"
    assert cfgs["gspo"].eps_high == 4e-4 and cfgs["grpo2"].aggregation != cfgs["grpo"].aggregation


def test_a_study_arm_is_evaluated_with_a_suite(tmp_path):
    """--suite evaluates each finished arm's final weights; the summary puts the suite's rows
    (and the paper's column, empty for the tiny model) beside the training columns."""
    import yaml

    from llm.data.tiny import write_tiny_task

    write_tiny_task(tmp_path / "copy.jsonl", 6, seed=5, kind="copy")
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"benchmarks": [
        {"name": "copy", "data": str(tmp_path / "copy.jsonl"), "k": 2, "reward": "tiny_task",
         "prompt_format": "as_is", "max_new_tokens": 3, "paper": "aime24"},
    ]}))  # fmt: skip
    out = tmp_path / "s"
    assert study_main(_argv(out, "--arms", "tic_grpo", "--suite", str(suite))) == 0
    row = json.loads((out / "tic_grpo" / "eval_suite" / "eval_suite.json").read_text())["rows"][0]
    assert row["benchmark"] == "copy" and row["num_problems"] == 6 and row["paper"] is None
    summary = json.loads((out / "study_summary.json").read_text())
    assert [r["arm"] for r in summary["arms"]] == ["tic_grpo"]
    assert summary["arms"][0]["suite"] == [row]
    md = (out / "study_summary.md").read_text()
    assert f"| TIC-GRPO | avg@2 {100 * row['avg@2']:.2f} ± " in md
    # a suite that cannot run fails before any training
    assert study_main(_argv(tmp_path / "t", "--suite", str(tmp_path / "none.yaml"))) == 2
    assert not (tmp_path / "t" / "grpo").exists()
