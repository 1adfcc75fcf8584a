"""Code problems in LiveCodeBench's shape: rows to prompts and test specs, LiveCodeBench's
packed private tests, the row-level error rules, and the tiny code task."""

from __future__ import annotations

import base64
import json
import os
import pickle
import zlib

import pytest

from llm.data.code import SYSTEM_PROMPT, convert_code_row
from llm.data.code_tasks import write_tiny_code_task
from llm.data.loaders import load_examples
from llm.data.readers import DataError
from llm.sandbox.judge import CodeTest, parse_tests


def packed(cases: list[dict]) -> str:
    """LiveCodeBench's private_test_cases encoding: base64(zlib(pickle(json string)))."""
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(cases)))).decode()


STDIN_ROW = {
    "question_title": "A+B",
    "question_content": "Read two integers and print their sum.",
    "platform": "atcoder",
    "starter_code": "",
    "public_test_cases": json.dumps([{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]),
    "private_test_cases": packed([{"input": "5 5\n", "output": "10\n", "testtype": "stdin"}]),
    "metadata": "{}",
}
CALL_ROW = {
    "question_content": "Return the indices of the two numbers adding up to target.",
    "starter_code": "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n        ",
    "public_test_cases": [
        {"input": "[2,7,11,15]\n9", "output": "[0, 1]", "testtype": "functional"}
    ],
    "private_test_cases": "",
    "metadata": {"func_name": "twoSum"},
}


def load_code_problems(path, **kw):
    return load_examples(path, schema="code", **kw)


def write_jsonl(path, rows) -> str:
    with open(path, "w") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return str(path)


def test_lcb_rows_to_prompts_and_tests(tmp_path):
    path = write_jsonl(tmp_path / "lcb.jsonl", [STDIN_ROW, CALL_ROW])
    ex = load_code_problems(path).examples
    stdin, call = parse_tests(ex[0].answer), parse_tests(ex[1].answer)
    assert stdin.fn_name is None and stdin.extract == "fenced"
    assert stdin.tests == (CodeTest("1 2\n", "3\n"), CodeTest("5 5\n", "10\n"))
    assert call.fn_name == "twoSum" and call.tests == (CodeTest("[2,7,11,15]\n9", "[0, 1]"),)
    system, user = ex[0].messages
    assert system == {"role": "system", "content": SYSTEM_PROMPT}
    assert user["content"].startswith("### Question:\nRead two integers")
    assert "Read the inputs from stdin" in user["content"]
    assert "```python\nclass Solution:" in ex[1].messages[1]["content"]
    assert (ex[0].source, ex[0].row, ex[1].row) == (path, 0, 1)
    _, public = convert_code_row(STDIN_ROW, "public")
    assert parse_tests(public).tests == (CodeTest("1 2\n", "3\n"),)
    with pytest.raises(ValueError, match="test_set must be one of"):
        convert_code_row(STDIN_ROW, "private")


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "lcb.parquet"
    pq.write_table(pa.Table.from_pylist([STDIN_ROW, STDIN_ROW]), path)
    assert len(load_code_problems(path).examples) == 2


@pytest.mark.parametrize(
    "change, message",
    [
        ({"question_content": " "}, "field 'question_content': missing or empty statement"),
        ({"public_test_cases": "[]", "private_test_cases": ""}, "no test cases"),
        ({"public_test_cases": "not json or base64!"}, "neither JSON nor base64"),
        ({"public_test_cases": [{"input": "1", "output": "2", "testtype": "x"}]}, "testtype"),
        ({"public_test_cases": [{"input": 1, "output": "2"}]}, "must be strings"),
        (
            {
                "public_test_cases": [{"input": "x", "output": "1", "testtype": "functional"}],
                "private_test_cases": "",
                "metadata": {"func_name": "f"},
            },
            "not JSON",
        ),  # fmt: skip
        (
            {
                "public_test_cases": [{"input": "1", "output": "1", "testtype": "functional"}],
                "private_test_cases": "",
            },
            "need metadata.func_name",
        ),  # fmt: skip
        (
            {
                "private_test_cases": [{"input": "1", "output": "1", "testtype": "functional"}],
                "metadata": {"func_name": "f"},
            },
            "mixes stdin and functional",
        ),  # fmt: skip
        ({"metadata": "{"}, "field 'metadata': not valid JSON"),
        ({"metadata": {"func_name": "not an id"}}, "identifier"),
        ({"starter_code": 3}, "field 'starter_code'"),
    ],
)
def test_row_errors_name_file_row_field(tmp_path, change, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [STDIN_ROW, {**STDIN_ROW, **change}])
    with pytest.raises(DataError, match=message) as info:
        load_code_problems(path)
    assert f"{path}: row 1 (line 2)" in str(info.value)
    skipped = load_code_problems(path, on_error="skip")
    assert len(skipped.examples) == 1 and skipped.skipped == 1 and len(skipped.problems) == 1


def test_packed_tests_cannot_run_code(tmp_path):
    """A pickle that names a global (here os.system) is refused, not loaded."""

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "PWNED"),))

    blob = base64.b64encode(zlib.compress(pickle.dumps(Evil()))).decode()
    path = write_jsonl(tmp_path / "evil.jsonl", [{**STDIN_ROW, "private_test_cases": blob}])
    with pytest.raises(DataError, match="UnpicklingError"):
        load_code_problems(path)
    assert not (tmp_path / "PWNED").exists()


def test_zlib_bomb_is_a_row_error(tmp_path, monkeypatch):
    import llm.data.code as dc

    monkeypatch.setattr(dc, "MAX_TESTS_BYTES", 1000)
    bomb = base64.b64encode(zlib.compress(b"\0" * 100_000)).decode()
    path = write_jsonl(tmp_path / "bomb.jsonl", [{**STDIN_ROW, "private_test_cases": bomb}])
    with pytest.raises(DataError, match="more than 1000 bytes"):
        load_code_problems(path)


def test_file_level_errors(tmp_path):
    maths = write_jsonl(tmp_path / "m.jsonl", [{"problem": "1+1", "answer": "2"}])
    with pytest.raises(DataError, match="row 0 .*field 'tests': no test cases"):
        load_code_problems(maths)  # a maths file read as code
    with pytest.raises(DataError, match="no usable examples"):
        load_code_problems(
            write_jsonl(tmp_path / "e.jsonl", [{**STDIN_ROW, "question_content": ""}]),
            on_error="skip",
        )


def test_tiny_code_task(tmp_path):
    path = write_tiny_code_task(tmp_path / "t.jsonl", 20, seed=3)
    assert path.read_text() == write_tiny_code_task(tmp_path / "u.jsonl", 20, seed=3).read_text()
    ex = load_code_problems(path).examples
    assert len(ex) == 20
    spec = parse_tests(ex[0].answer)
    assert (spec.prefix, spec.suffix, spec.extract) == ("print(", ")\n", "raw")
    assert ex[0].messages == ({"role": "user", "content": ex[0].messages[0]["content"]},)
    assert ex[0].messages[0]["content"].startswith("repeat ")
    digit = ex[0].messages[0]["content"].split()[1]
    assert spec.tests == (CodeTest("", digit),)


def test_load_examples_reads_code_rows(tmp_path):
    """schema "auto" detects code rows (LiveCodeBench's, or problem + tests)."""
    lcb = write_jsonl(tmp_path / "lcb.jsonl", [STDIN_ROW, CALL_ROW])
    tiny = write_tiny_code_task(tmp_path / "t.jsonl", 5, seed=0)
    for path in (lcb, tiny):
        assert load_examples(path).examples == load_code_problems(path).examples
    with pytest.raises(DataError, match="row 1 .*no test cases"):
        load_examples(
            write_jsonl(tmp_path / "b.jsonl", [STDIN_ROW, {**STDIN_ROW, "public_test_cases": "[]",
                                                           "private_test_cases": ""}])
        )  # fmt: skip
