"""`ticgrpo eval` on LiveCodeBench-style files: greedy Avg@1 and pass@k with the "code" reward
(arithmetic with stub generators), and the command end to end on the tiny model."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest

from llm.data.code_tasks import write_tiny_code_task
from llm.evaluate import evaluate_code, main
from tests.test_code_data import CALL_ROW, STDIN_ROW, write_jsonl
from tests.test_llm_train import shared_tiny_model

RIGHT = {
    "A+B": "a, b = map(int, input().split())\nprint(a + b)",
    "twoSum": "class Solution:\n    def twoSum(self, nums, target):\n"
    "        return next([j, i] for i in range(len(nums)) for j in range(i)"
    " if nums[i] + nums[j] == target)",
}
WRONG = "print(0)"


def problem_of(prompt: str) -> str:
    return "A+B" if "sum" in prompt else "twoSum"


def stub(right: dict[str, set[int]]):
    """A generator whose sample j of a problem is right when j is in right[problem]."""

    def generate(model, tokenizer, prompts, *, num_samples, max_new_tokens, **kw):
        texts = []
        for p in prompts:
            name = problem_of(p)
            for j in range(num_samples):
                code = RIGHT[name] if j in right[name] else WRONG
                texts.append(f"Sure.\n```python\n{code}\n```")
        n = len(texts)
        return SimpleNamespace(texts=texts, completion_ids=[[1]] * n, truncated=[False] * n)

    return generate


@pytest.fixture(scope="module")
def options():
    return {} if shutil.which("bwrap") else {"sandbox": "unsandboxed", "allow_unsandboxed": True}


def test_greedy_avg1_and_pass_at_k(tmp_path, options):
    path = write_jsonl(tmp_path / "lcb.jsonl", [STDIN_ROW, CALL_ROW])
    out = evaluate_code(
        None, None, path, k=4, max_new_tokens=8, reward_options={"timeout_s": 2.0, **options},
        greedy_fn=stub({"A+B": {0}, "twoSum": set()}),
        generate_fn=stub({"A+B": {0, 1}, "twoSum": {3}}),
    )  # fmt: skip
    assert out["code/avg@1_greedy"] == 0.5
    assert out["code/avg@4"] == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert out["code/pass@1"] == pytest.approx(out["code/avg@4"])
    assert out["code/pass@2"] == pytest.approx((5 / 6 + 1 / 2) / 2)
    assert out["code/pass@4"] == 1.0
    # print(0) is a wrong answer to A+B and a runtime error for twoSum (no such function)
    assert out["code/greedy/passed"] == 0.5 and out["code/greedy/runtime_error"] == 0.5
    assert out["code/sampled/passed"] == 3 / 8 and out["code/sampled/wrong_answer"] == 2 / 8
    assert out["code/sampled/runtime_error"] == 3 / 8
    assert out["code/num_problems"] == 2
    assert [p["greedy_reward"] for p in out["problems"]] == [1.0, 0.0]
    json.dumps(out)


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")
def test_ticgrpo_eval_code_file_end_to_end(tmp_path):
    data = write_tiny_code_task(tmp_path / "code.jsonl", 6, seed=0)
    argv = ["--model", str(shared_tiny_model()), "--data", str(data), "--reward", "code"]
    argv += ["--k", "2", "--max-new-tokens", "2", "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    result = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    m = result["metrics"]
    assert 0.0 <= m["code/avg@1_greedy"] <= 1.0 and m["code/num_problems"] == 6
    assert sum(v for k, v in m.items() if k.startswith("code/greedy/")) == pytest.approx(1.0)
    assert sum(v for k, v in m.items() if k.startswith("code/sampled/")) == pytest.approx(1.0)
    assert len(result["problems"]) == 6 and all("greedy" in p for p in result["problems"])
