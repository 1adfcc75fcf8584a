"""Evaluating on LiveCodeBench-style files with the "code" reward: the metrics' arithmetic with a
stub generator on LiveCodeBench rows, `ticgrpo eval --data FILE --reward code` (avg@k, pass@k)
and a suite entry with greedy decoding (Avg@1, the paper's LiveCodeBench number) beside a maths
benchmark, end to end on the tiny model."""

from __future__ import annotations

import json
import os
import shutil
from types import SimpleNamespace

import pytest
import yaml

from llm.data.code_tasks import write_tiny_code_task
from llm.data.loaders import load_examples
from llm.data.tasks import write_tiny_task
from llm.eval.metrics import evaluate
from llm.evaluate import main
from llm.rewards.registry import get_reward
from tests.test_code_data import CALL_ROW, STDIN_ROW, write_jsonl
from tests.test_llm_train import shared_tiny_model

RIGHT = {
    "A+B": "a, b = map(int, input().split())\nprint(a + b)",
    "twoSum": "class Solution:\n    def twoSum(self, nums, target):\n"
    "        return next([j, i] for i in range(len(nums)) for j in range(i)"
    " if nums[i] + nums[j] == target)",
}
NEEDS_BWRAP = pytest.mark.skipif(
    shutil.which("bwrap") is None and not os.environ.get("CI"), reason="needs bubblewrap"
)  # CI installs it (.ci/run): there a missing bwrap fails


def stub(right: dict[str, set[int]]):
    """A generator whose sample j of a problem is right when j is in right[problem]."""

    def generate(model, tokenizer, prompts, *, num_samples, max_new_tokens, **kw):
        texts = []
        for p in prompts:
            name = "A+B" if "sum" in p else "twoSum"
            for j in range(num_samples):
                code = RIGHT[name] if j in right[name] else "print(0)"
                texts.append(f"Sure.\n```python\n{code}\n```")
        n = len(texts)
        return SimpleNamespace(texts=texts, completion_ids=[[1]] * n, truncated=[False] * n)

    return generate


def test_pass_at_k_on_livecodebench_rows(tmp_path):
    """LiveCodeBench rows through the loader, judged by the code reward: avg@k and pass@k."""
    options = {} if shutil.which("bwrap") else {"sandbox": "unsandboxed", "allow_unsandboxed": True}
    reward = get_reward("code", timeout_s=2.0, **options)
    examples = load_examples(write_jsonl(tmp_path / "lcb.jsonl", [STDIN_ROW, CALL_ROW])).examples
    out = evaluate(None, None, examples, k=4, max_new_tokens=8, reward=reward,
                   generate_fn=stub({"A+B": {0, 1}, "twoSum": {3}}))  # fmt: skip
    assert out["eval/avg@4"] == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert out["eval/pass@2"] == pytest.approx((5 / 6 + 1 / 2) / 2)
    assert out["eval/pass@4"] == 1.0
    # print(0) is a wrong answer to A+B and a runtime error for twoSum (no such function)
    assert dict(reward.stats.counts) == {"passed": 3, "wrong_answer": 2, "runtime_error": 3}


@NEEDS_BWRAP
def test_ticgrpo_eval_code_file(tmp_path):
    data = write_tiny_code_task(tmp_path / "code.jsonl", 6, seed=0)
    argv = ["--model", str(shared_tiny_model()), "--data", str(data), "--reward", "code"]
    argv += ["--k", "2", "--max-new-tokens", "2", "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    result = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert result["metrics"]["eval/num_problems"] == 6
    assert 0.0 <= result["metrics"]["eval/pass@2"] <= 1.0
    assert len(result["problems"]) == 6


@NEEDS_BWRAP
def test_suite_scores_a_code_benchmark_beside_maths(tmp_path):
    """The paper's LiveCodeBench entry (greedy Avg@1, schema code, reward code) in one suite
    with a maths benchmark."""
    code = write_tiny_code_task(tmp_path / "lcb.jsonl", 6, seed=0)
    maths = write_tiny_task(tmp_path / "maths.jsonl", 6, seed=0)
    suite = {
        "max_new_tokens": 2,
        "benchmarks": [
            {"name": "tiny_maths", "data": str(maths), "k": 2, "reward": "tiny_task",
             "prompt_format": "as_is"},
            {"name": "livecodebench", "data": str(code), "greedy": True, "schema": "code",
             "reward": "code", "prompt_format": "as_is", "paper": "livecodebench"},
        ],
    }  # fmt: skip
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    argv = ["--model", str(shared_tiny_model()), "--suite", str(tmp_path / "suite.yaml")]
    argv += ["--out", str(tmp_path / "out")]
    assert main(argv) == 0
    result = json.loads((tmp_path / "out" / "eval_suite.json").read_text())
    rows = {r["benchmark"]: r for r in result["rows"]}
    lcb = rows["livecodebench"]
    assert lcb["decoding"] == "greedy" and lcb["k"] == 1 and lcb["num_problems"] == 6
    assert lcb["reward"] == "code" and 0.0 <= lcb["avg@1"] <= 1.0
    assert rows["tiny_maths"]["k"] == 2
    judged = json.loads((tmp_path / "out" / "problems_livecodebench.json").read_text())
    assert len(judged) == 6 and all(len(p["completions"]) == 1 for p in judged)
