"""Judging programs against LiveCodeBench-shaped tests: extraction of the last fenced block,
the output comparisons (hand values), stdin and call tests end to end, first-failure cut-short,
and the tricks that try to fake a pass."""

from __future__ import annotations

import json
import shutil

import pytest

from llm.sandbox import Limits, SandboxPool
from llm.sandbox.judge import (
    CodeTest,
    CodeTests,
    call_arguments,
    call_matches,
    encode_tests,
    extract_program,
    judge,
    parse_tests,
    stdout_matches,
)

LIMITS = Limits(time_s=1.5, memory_mb=256, tmp_mb=8)


@pytest.fixture(scope="module")
def pool():
    """The real sandbox where bwrap is installed, else the opt-in unsandboxed backend: what is
    tested here is the judging, which is the same on both."""
    if shutil.which("bwrap"):
        return SandboxPool(2)
    return SandboxPool(2, backend="unsandboxed", allow_unsandboxed=True)


@pytest.mark.parametrize(
    "text, code",
    [
        ("```python\nprint(1)\n```", "print(1)\n"),
        ("a\n```py\nx=1\n```\nthen\n```python\nprint(2)\n```\nbye", "print(2)\n"),
        ("```\nprint(3)\n```", "print(3)\n"),
        ("```python\nprint(1)\n```\n```python\nprint(2", "print(1)\n"),  # unclosed last: ignored
        ("no code here", None),
        ("```python\n```", None),  # empty block
        ("```python print(1)```", None),  # one line: no body
        ("  ```python\n  print(4)\n  ```", "  print(4)\n"),  # indented fences (lists)
    ],
)
def test_extract_program(text, code):
    assert extract_program(text) == code


def test_extract_program_size_cap():
    assert extract_program("```\n" + "x" * 50 + "\n```", max_chars=40) is None


@pytest.mark.parametrize(
    "got, expected, ok",
    [
        ("1 2\n3\n", "1 2\n3", True),
        ("  1 2  \n3\n\n", "1 2\n3", True),
        ("1.50\n", "1.5", True),
        ("1e2\n", "100", True),
        ("1  2\n", "1 2", True),
        ("1 2\n", "1 3", False),
        ("1\n2\n", "1 2", False),
        ("YES", "yes", False),
        ("", "0", False),
        ("nan", "nan", True),  # equal strings
        ("abc def", "abc  def", False),  # token-wise equality is for numbers only
    ],
)
def test_stdout_matches(got, expected, ok):
    assert stdout_matches(got, expected) is ok


@pytest.mark.parametrize(
    "got, expected, ok",
    [
        ("5\n", "5", True),
        ("debug print\n\n[1, 2]\n", "[1,2]", True),
        ("[1, 2]", "[2, 1]", False),
        ("5.0", "5", True),
        ('"a"', '"a"', True),
        ("", "5", False),
        ("not json", "5", False),
    ],
)
def test_call_matches(got, expected, ok):
    assert call_matches(got, expected) is ok


def test_parse_tests_round_trip_and_errors():
    spec = CodeTests((CodeTest("1 2\n", "3\n"),), None)
    assert parse_tests(encode_tests(spec)) == spec
    for bad, msg in [
        ("not json", "not JSON"),
        ("[]", "non-empty 'tests'"),
        ('{"tests": []}', "non-empty 'tests'"),
        ('{"tests": [{"input": 1, "output": "2"}]}', "test 0: 'input'"),
        ('{"tests": [{"input": "1"}]}', "test 0: 'output'"),
        ('{"tests": [{"input": "1", "output": "2"}], "fn_name": "a b"}', "identifier"),
    ]:
        with pytest.raises(ValueError, match=msg):
            parse_tests(bad)
    assert call_arguments('[1, 2]\n"x"\n\n') == [[1, 2], "x"]


ADD = CodeTests((CodeTest("1 2\n", "3"), CodeTest("10 5\n", "15"), CodeTest("0 0\n", "0")))
TWO_SUM = CodeTests(
    (CodeTest("[2,7,11,15]\n9", "[0,1]"), CodeTest("[3,2,4]\n6", "[1,2]")), fn_name="twoSum"
)
SOLUTION = """class Solution:
    def twoSum(self, nums: List[int], target: int) -> List[int]:
        seen = {}
        for i, x in enumerate(nums):
            if target - x in seen:
                return [seen[target - x], i]
            seen[x] = i
"""


def test_judge_stdin_and_call(pool):
    programs = [
        "a, b = map(int, input().split())\nprint(a + b)",  # right
        "a, b = map(int, input().split())\nprint(a - b)",  # wrong on test 0
        "a, b = map(int, input().split())\nprint(a + b if a else 1 / 0)",  # crash on test 2
        None,  # no code
        SOLUTION,
        "def twoSum(nums, target):\n    return [0, 1]",  # top-level function; wrong on test 1
    ]
    tests = [ADD, ADD, ADD, ADD, TWO_SUM, TWO_SUM]
    out = judge(programs, tests, pool, LIMITS, partial=True)
    assert [v.status for v in out] == [
        "passed",
        "wrong_answer",
        "runtime_error",
        "no_code",
        "passed",
        "wrong_answer",
    ]
    assert [v.passed for v in out] == [3, 1, 2, 0, 2, 1]
    assert out[2].per_test == ("passed", "passed", "runtime_error")


def test_judge_stops_at_first_failure(pool):
    out = judge(["print(0)"], [ADD], pool, LIMITS, partial=False)[0]
    assert out.status == "wrong_answer" and out.per_test == ("wrong_answer", "skipped", "skipped")
    stall = judge(["import time\ntime.sleep(60)"], [ADD], pool, LIMITS)[0]
    assert stall.status == "timeout" and stall.per_test == ("timeout", "skipped", "skipped")


FAKES = {
    # right output, then a failing exit status
    "print_then_crash": "print(3)\nraise SystemExit(1)",
    "print_then_os_exit": "import os, sys\nprint(3)\nsys.stdout.flush()\nos._exit(1)",
    # an object that says it equals anything
    "always_equal": "class E:\n    def __eq__(self, o):\n        return True\n"
    "def twoSum(nums, target):\n    return E()",
    "always_equal_list": "class E(list):\n    def __eq__(self, o):\n        return True\n"
    "def twoSum(nums, target):\n    return E()",
    # exit 0 before the harness runs
    "exit_before_harness": "import sys\nsys.exit(0)\ndef twoSum(nums, target):\n    return [0, 1]",
    # patch the harness's tools / the exit path
    "patch_exit": "import sys, os\nsys.exit = lambda *a: None\nos._exit = lambda *a: None\n"
    "def twoSum(nums, target):\n    raise RuntimeError",
    "atexit_line": "import atexit\natexit.register(lambda: print('[0, 1]'))\n"
    "def twoSum(nums, target):\n    return [9]",
    # look for the expected outputs
    "read_tests": "import os\nfor d in ('/', '/sandbox', '/tmp', '..'):\n    print(os.listdir(d))\n"
    "def twoSum(nums, target):\n    return [9]",
}


def test_fake_passes_fail(pool):
    """Each trick scores its honest verdict: the atexit line and the exit-status rule stop the
    pass-faking (the 'atexit_line' fake matches test 0 only, as a hard-coded answer would)."""
    names = list(FAKES)
    tests = [ADD if n.startswith("print_") else TWO_SUM for n in names]
    out = dict(zip(names, judge([FAKES[n] for n in names], tests, pool, LIMITS, partial=True)))
    assert out["print_then_crash"].status == "runtime_error"
    assert out["print_then_os_exit"].status == "runtime_error"
    assert out["always_equal"].status == "runtime_error"  # not JSON serialisable
    assert out["always_equal_list"].status == "wrong_answer"  # serialises as []
    assert out["exit_before_harness"].status == "wrong_answer"
    assert out["patch_exit"].status == "runtime_error"
    assert out["atexit_line"].per_test == ("passed", "wrong_answer")
    assert out["read_tests"].status == "wrong_answer"
    assert all(v.status != "passed" for v in out.values())


def test_output_cap_grows_with_expected_output(pool):
    big = "7 " * 50_000
    tests = CodeTests((CodeTest("", big),))
    out = judge(["print('7 ' * 50000)"], [tests], pool, Limits(time_s=2, output_bytes=1024))
    assert out[0].status == "passed"
    assert json.loads(encode_tests(tests))["tests"][0]["output"] == big


def test_raw_completion_with_prefix_and_suffix(pool):
    """HumanEval-style: the whole completion, between the problem's prefix and suffix."""
    from llm.sandbox.judge import program_of

    tests = CodeTests((CodeTest("", "7"),), prefix="print(", suffix=")\n", extract="raw")
    assert parse_tests(encode_tests(tests)) == tests
    assert program_of("3 + 4", tests) == "print(3 + 4)\n"
    assert program_of("  ", tests) is None
    assert program_of("```python\nprint(7)\n```", ADD) == "print(7)\n"
    programs = [program_of(c, tests) for c in ("7", "3 + 4", "8", "7 7", "")]
    out = judge(programs, [tests] * 5, pool, LIMITS)
    assert [v.status for v in out] == [
        "passed",
        "passed",
        "wrong_answer",
        "runtime_error",
        "no_code",
    ]


def test_identical_programs_run_once(pool, monkeypatch):
    calls = []
    real = pool.run
    monkeypatch.setattr(
        pool, "run", lambda jobs, *a, **k: calls.append(len(jobs)) or real(jobs, *a, **k)
    )
    out = judge(["print(3)"] * 4 + ["print(4)"], [ADD] * 5, pool, LIMITS, partial=True)
    assert calls == [6]  # 2 distinct programs x 3 tests
    assert [v.passed for v in out] == [1, 1, 1, 1, 0]
