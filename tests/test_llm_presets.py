"""The paper presets against v5 appendix C / SPEC section 5, one-epoch step counts, and the
paper's data files (`ticgrpo data`)."""

from __future__ import annotations

import json

import pytest

from llm.config import build as C
from llm.config.presets import get_preset
from llm.data.loaders import load_examples
from llm.data.paper_data import DAPO_PREFIX, dapo_prompt, dedup, paper_train_rows
from llm.data.paper_data import main as data_main
from llm.data.readers import DataError
from llm.rewards.registry import get_reward
from llm.runstate.setup import one_epoch_steps


def preset_cfg(name: str, **extra) -> C.TrainConfig:
    cfg = C.apply_overrides(C.TrainConfig(), {**get_preset(name), **extra}, where=name)
    return C.validate(cfg, check_paths=False)


@pytest.mark.parametrize("method", ["grpo", "gspo", "tic_grpo", "grpo_traj_is", "grpo2", "dapo"])
def test_paper_preset_is_v5_appendix_c(method):
    cfg = preset_cfg("paper", method=method)
    assert "Qwen3-1.7B" in cfg.model
    # 128 prompts per rollout, 4 mini-batches of 32 prompts, one pass: K = 4
    n = cfg.prompts_per_step * cfg.group_size
    assert cfg.prompts_per_step == 128 and cfg.minibatch_size == 32 * cfg.group_size
    assert cfg.epochs_per_rollout * n // cfg.minibatch_size == 4
    assert cfg.total_steps == 0  # one epoch, counted from the data
    # no dynamic sampling, no overlong shaping, no KL, even for the dapo row
    assert cfg.dynamic_sampling is False and cfg.overlong_buffer == 0 and cfg.beta == 0
    assert (cfg.advantage_mode, cfg.std_kind) == ("std", "sample")  # verl's GRPO advantage
    assert cfg.temperature == 1.0 and cfg.top_p == 1.0
    assert (cfg.eval_k, cfg.eval_temperature) == (32, 1.0)  # AIME24 Avg@32 during training
    assert cfg.reward == "answer_tag" and cfg.data_schema == "dapo"
    # micro-batches bounded by the area of 4 full-length rows
    assert cfg.microbatch_tokens == 4 * (cfg.max_prompt_tokens + cfg.max_new_tokens)


def test_paper_8b_keeps_the_global_batch(monkeypatch):
    small, big = preset_cfg("paper"), None
    monkeypatch.setenv("WORLD_SIZE", "16")  # two nodes of 8 GPUs
    big = preset_cfg("paper-8b")
    assert "Qwen3-8B" in big.model and big.distributed
    for key in ("prompts_per_step", "group_size", "minibatch_size", "epochs_per_rollout",
                "max_new_tokens", "lr", "optimizer", "total_steps"):  # fmt: skip
        assert getattr(big, key) == getattr(small, key), key
    assert big.microbatch_tokens < small.microbatch_tokens  # accumulation: more, smaller passes
    monkeypatch.setenv("WORLD_SIZE", "24")  # 128 prompts do not split over 24 ranks
    with pytest.raises(C.ConfigError, match="multiple"):
        preset_cfg("paper-8b")


def test_one_epoch_steps_count_every_prompt_at_most_once():
    cfg = preset_cfg("paper")
    assert one_epoch_steps(cfg, 18_800).total_steps == 146  # 18,800 // 128, last batch dropped
    assert one_epoch_steps(cfg, 128).total_steps == 1
    fixed = preset_cfg("paper", total_steps=7)
    assert one_epoch_steps(fixed, 18_800).total_steps == 7
    with pytest.raises(C.ConfigError, match="total_steps"):
        preset_cfg("paper", total_steps=-1)


def test_one_epoch_run_on_the_tiny_model(tmp_path):
    """total_steps=0 trains len(train) // prompts_per_step steps: 10 problems, 4 per step: 2."""
    from llm.train import train

    over = dict(total_steps=0, tiny_task_size=10, prompts_per_step=4, group_size=2,
                max_new_tokens=2, minibatch_size=8, eval_data="", samples_every=0,
                save_every=0, tensorboard=False, progress=False)  # fmt: skip
    cfg = C.validate(C.apply_overrides(C.TrainConfig(), {**get_preset("tiny"), **over}, where="t"))
    train(cfg, tmp_path / "run")
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2]
    assert json.loads(lines[-1])["data/epoch"] == 0.0


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _dapo(problem, answer):
    return {"data_source": "math_dapo", "prompt": [{"role": "user", "content": dapo_prompt(problem)}],
            "ability": "MATH", "reward_model": {"style": "rule", "ground_truth": answer},
            "extra_info": {"index": "x"}}  # fmt: skip


def test_paper_data_dedups_dapo_and_keeps_aime_1983_to_2022(tmp_path):
    dapo = _write_jsonl(tmp_path / "dapo.jsonl",
                        [_dapo("What is 1+1?", "2"), _dapo("What is 2+3?", "5")] * 3)  # fmt: skip
    aime = _write_jsonl(tmp_path / "aime.jsonl", [
        {"ID": "1983-1", "Year": 1983, "Problem": "Find x.", "Answer": 34},
        {"ID": "2022-I-1", "Year": 2022, "Problem": "Find y.", "Answer": "107"},
        {"ID": "2023-I-1", "Year": 2023, "Problem": "Find z.", "Answer": 5},
        {"ID": "2024-I-1", "Year": 2024, "Problem": "Find w.", "Answer": 6},
    ])  # fmt: skip
    rows, counts = paper_train_rows(dapo, aime)
    assert counts == {"dapo_rows": 6, "dapo_unique": 2, "aime": 2, "total": 4}
    out = tmp_path / "train.jsonl"
    assert data_main(["paper", "--dapo", str(dapo), "--aime", str(aime), "--out", str(out)]) == 0
    examples = load_examples(out, schema="dapo").examples
    assert [e.answer for e in examples] == ["2", "5", "34", "107"]
    aime_prompt = examples[2].messages[0]["content"]
    assert aime_prompt.startswith(DAPO_PREFIX) and "Find x." in aime_prompt
    # one reward scores DAPO's and AIME's rows alike
    reward = get_reward("answer_tag")
    assert reward(["so\nAnswer: 34", "Answer: 12"], ["34", "107"]) == [1.0, 0.0]
    # AIME24 for the trainer's evaluation: the 2024 rows only
    out24 = tmp_path / "aime24.jsonl"
    assert data_main(["convert", str(aime), str(out24), "--years", "2024-2024"]) == 0
    assert [e.answer for e in load_examples(out24).examples] == ["6"]


def test_paper_data_errors_name_file_row_and_field(tmp_path, capsys):
    aime = _write_jsonl(tmp_path / "aime.jsonl", [{"Problem": "Find x.", "Answer": 3}])
    dapo = _write_jsonl(tmp_path / "dapo.jsonl", [_dapo("q", "1")])
    with pytest.raises(DataError, match=r"aime.jsonl: row 0: field 'Year': missing"):
        paper_train_rows(dapo, aime)
    bad = _write_jsonl(tmp_path / "bad.jsonl", [_dapo("q", "1"), {"prompt": "x"}])
    assert data_main(["paper", "--dapo", str(bad), "--aime", str(aime)]) == 2
    assert "bad.jsonl" in capsys.readouterr().err
    assert dedup([_dapo("a", "1"), _dapo("a", "2")]) == [_dapo("a", "1")]
