"""bench/bench_trainer_vs_trl.py: a fast ours-only run, the prompt order TRL is given, options.

The both-sides run needs TRL (not a dependency; skipped without it):
``PYTHONPATH=/path/to/trl_site pytest tests/test_bench_trainer.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from bench._trainer_sides import setup_workload, table_digests
from bench.bench_trainer_vs_trl import main, parse_args

FAST = ["--steps", "1", "--warmup", "0", "--rounds", "1", "--max-new-tokens", "8"]


def _run(tmp_path: Path, *extra: str) -> dict:
    """main() with ``extra`` options, results in tmp_path; the JSON it wrote."""
    assert main([*FAST, *extra, "--results-dir", str(tmp_path), "--out-name", "t"]) == 0
    return json.loads((tmp_path / "t.json").read_text())


def _check_row(row: dict) -> None:
    for key in ("gen_s", "update_s", "step_s", "gen_cpu_s", "update_cpu_s", "step_cpu_s"):
        assert row[key] > 0, key
    assert row["rl_steps_timed"] == 1
    assert row["mean_completion_tokens"] > 0


def test_ours_only_run_writes_rows(tmp_path):
    out = _run(tmp_path, "--sides", "ours")
    assert [r["side"] for r in out["rows"]] == ["ours"]
    _check_row(out["rows"][0])
    assert out["same_prompts_in_trainer_order"] == {"ours": True}
    assert len(out["completion_tokens_by_step"]["ours"]) == 1
    assert out["workload"]["device"] == "cpu" and out["workload"]["dtype"] == "float32"


def test_trl_table_is_the_trainers_prompt_order(tmp_path):
    """The table TRL reads front to back (shuffle_dataset=False) is the sequence our trainer's
    DataStream yields for the seed, built here from the data file independently."""
    from transformers import AutoTokenizer

    from llm.data.loaders import load_examples
    from llm.data.stream import DataStream

    args = parse_args(["--seed", "3", "--prompts", "3", "--steps", "4", "--warmup", "1"])
    paths = setup_workload(args, tmp_path)
    table = json.loads(Path(paths["prompts_file"]).read_text())
    examples = load_examples(paths["data_file"], schema="plain", instruction=None).examples
    tok = AutoTokenizer.from_pretrained(paths["model_dir"])
    stream = DataStream(examples, tok, SimpleNamespace(seed=3, chat_template=True))
    pairs = stream.next(15)  # P · (steps + warmup)
    assert table["prompts"] == [p for p, _ in pairs]
    assert table["answers"] == [a for _, a in pairs]
    assert len(table_digests(table, 3)) == 5
    other = DataStream(examples, tok, SimpleNamespace(seed=4, chat_template=True)).next(15)
    assert [p for p, _ in other] != table["prompts"]  # the order is the seed's, not the file's


def test_qwen_vocab_shrunk_runs(tmp_path):
    """--arch qwen2.5-1.5b keeps vocab 151,936 under --layers/--hidden; ids beyond the tiny
    tokenizer's 41 decode without error."""
    args = parse_args(["--arch", "qwen2.5-1.5b", "--layers", "1", "--hidden", "64"])
    cfg = json.loads(
        (Path(setup_workload(args, tmp_path)["model_dir"]) / "config.json").read_text()
    )
    assert (cfg["vocab_size"], cfg["num_hidden_layers"], cfg["hidden_size"]) == (151_936, 1, 64)
    out = _run(
        tmp_path / "res",
        *["--sides", "ours", "--arch", "qwen2.5-1.5b", "--layers", "1", "--hidden", "64"],
        *["--prompts", "2", "--group", "2"],
    )
    _check_row(out["rows"][0])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_bad_options_exit_nonzero(capsys):
    for argv in (["--device", "cuda"], ["--microbatch-size", "5"], ["--group", "1"]):
        with pytest.raises(SystemExit) as e:
            parse_args(argv)
        assert e.value.code == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_both_sides_one_step(tmp_path):
    pytest.importorskip("trl")
    out = _run(tmp_path)
    sides = [r["side"] for r in out["rows"]]
    assert sides == ["ours", "trl", "ratio trl/ours"]
    for row in out["rows"][:2]:
        _check_row(row)
    assert out["rows"][2]["step_cpu_s"] > 0
    assert out["same_prompts_in_trainer_order"] == {"ours": True, "trl": True}
    digests = {side: rs[0]["prompt_digests"] for side, rs in out["runs"].items()}
    assert digests["ours"] == digests["trl"]
