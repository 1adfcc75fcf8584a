"""Judging programs against test cases: a completion's program, its tests, a verdict.

Tests come in LiveCodeBench's two shapes (`CodeTests`):

- **stdin**: the program reads `input` on stdin and must print `output`. Outputs are compared as
  LiveCodeBench does: both sides stripped and split into lines (same number of lines); each line
  pair equal after stripping, or equal as lists of whitespace-separated tokens that all parse as
  the same decimal numbers (`Decimal("1.50") == Decimal("1.5")`).
- **call** (`fn_name` set): each line of `input` is one JSON argument; the program defines
  `fn_name` at top level or as a method of `class Solution` (LeetCode-style starter code), and
  its return value, serialised to JSON in the sandbox, must equal `json.loads(output)`.

What keeps a hostile program from faking a pass: the expected output never enters the sandbox
(it is compared in the parent, after the run); a pass needs exit status 0 *and* the right
output; a returned object is compared only after JSON serialisation in the sandbox, so an
`__eq__` that always says yes never reaches a comparison.

Verdicts (`VERDICTS`): passed, wrong_answer, runtime_error, timeout, memory, no_code,
sandbox_error. A program's verdict is `passed` when every test passes, else the verdict of its
first failing test; with `partial=False` its remaining tests are not run.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation

from llm.sandbox.limits import Limits
from llm.sandbox.pool import Job, SandboxPool
from llm.sandbox.runner import RunResult

VERDICTS = (
    "passed",
    "wrong_answer",
    "runtime_error",
    "timeout",
    "memory",
    "no_code",
    "sandbox_error",
)
#: Prepended to every fenced (LiveCodeBench) program, as LiveCodeBench does: starter code uses
#: `List[int]` & co. without importing them.
PRELUDE = (
    "from typing import *\nfrom functools import *\nfrom collections import *\n"
    "from itertools import *\nfrom heapq import *\nfrom bisect import *\nfrom string import *\n"
    "from operator import *\nfrom math import *\nimport math, sys, re, random, string, heapq\n"
    "import bisect, itertools, functools, collections, operator\n"
    "sys.setrecursionlimit(50000)\n"
)
_FENCE = re.compile(r"^[ \t]*```", re.MULTILINE)


@dataclass(frozen=True)
class CodeTest:
    """One test: `input` (stdin text, or one JSON argument per line) and expected `output`."""

    input: str
    output: str


EXTRACTS = ("fenced", "raw")


@dataclass(frozen=True)
class CodeTests:
    """The tests of one problem and how its program is made from a completion.

    `fn_name` None means stdin/stdout tests. The program is `prefix + code + suffix`, where code
    is the completion's last fenced block (`extract="fenced"`, LiveCodeBench) or the whole
    completion (`extract="raw"`, HumanEval-style completion of a prompt's code)."""

    tests: tuple[CodeTest, ...]
    fn_name: str | None = None
    prefix: str = ""
    suffix: str = ""
    extract: str = "fenced"


@dataclass(frozen=True)
class Verdict:
    """A program's verdict, its tests passed out of `total`, each test's verdict ("skipped"
    for tests not run after a failure), and the wall seconds its runs took in the sandbox."""

    status: str
    passed: int
    total: int
    per_test: tuple[str, ...] = ()
    seconds: float = 0.0


def extract_program(completion: str, max_chars: int = 100_000) -> str | None:
    """The content of the last closed ``` fenced block of `completion` (any language tag), or
    None when there is none or it is longer than `max_chars`.

    Fences are lines starting with three backticks, paired in order (open, close); an unclosed
    last fence (a truncated completion) is ignored, so an earlier closed block is used.
    """
    fences = [m.start() for m in _FENCE.finditer(completion)]
    if len(fences) < 2:
        return None
    last = len(fences) - (len(fences) % 2)  # pairs (0,1), (2,3), ...; drop an unpaired one
    start, end = fences[last - 2], fences[last - 1]
    body_start = completion.find("\n", start)
    if body_start < 0 or body_start >= end:
        return None
    code = completion[body_start + 1 : end]
    if not code.strip() or len(code) > max_chars:
        return None
    return code


def program_of(completion: str, tests: CodeTests, max_chars: int = 100_000) -> str | None:
    """The program a completion stands for under `tests` (None: no code; see CodeTests)."""
    if tests.extract == "raw":
        code = completion if completion.strip() and len(completion) <= max_chars else None
    else:
        code = extract_program(completion, max_chars)
    return None if code is None else tests.prefix + code + tests.suffix


def parse_tests(answer: str) -> CodeTests:
    """The tests encoded in an example's answer string: JSON `{"tests": [{"input", "output"},
    ...], "fn_name": str | null, "prefix"?, "suffix"?, "extract"?}` (what the code loader
    writes). Raises ValueError."""
    try:
        spec = json.loads(answer)
    except json.JSONDecodeError as exc:
        raise ValueError(f"code tests: answer is not JSON ({exc.msg})") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("tests"), list) or not spec["tests"]:
        raise ValueError("code tests: expected an object with a non-empty 'tests' list")
    fn_name = spec.get("fn_name")
    if fn_name is not None and not (isinstance(fn_name, str) and fn_name.isidentifier()):
        raise ValueError(f"code tests: fn_name must be an identifier, got {fn_name!r}")
    tests = []
    for k, t in enumerate(spec["tests"]):
        if not (isinstance(t, dict) and isinstance(t.get("input"), str)):
            raise ValueError(f"code tests: test {k}: 'input' must be a string")
        if not isinstance(t.get("output"), str):
            raise ValueError(f"code tests: test {k}: 'output' must be a string")
        tests.append(CodeTest(t["input"], t["output"]))
    prefix, suffix = spec.get("prefix", ""), spec.get("suffix", "")
    if not isinstance(prefix, str) or not isinstance(suffix, str):
        raise ValueError("code tests: prefix and suffix must be strings")
    extract = spec.get("extract", "fenced")
    if extract not in EXTRACTS:
        raise ValueError(f"code tests: extract must be one of {EXTRACTS}, got {extract!r}")
    return CodeTests(tuple(tests), fn_name, prefix, suffix, extract)


def encode_tests(tests: CodeTests) -> str:
    """Inverse of `parse_tests` (fields at their defaults are left out)."""
    spec: dict = {"tests": [{"input": t.input, "output": t.output} for t in tests.tests]}
    spec["fn_name"] = tests.fn_name
    for key, default in (("prefix", ""), ("suffix", ""), ("extract", "fenced")):
        if getattr(tests, key) != default:
            spec[key] = getattr(tests, key)
    return json.dumps(spec)


def call_arguments(test_input: str) -> list:
    """The JSON arguments of a call test, one per non-empty line. Raises ValueError."""
    return [json.loads(line) for line in test_input.split("\n") if line.strip()]


def build_job(code: str, tests: CodeTests, k: int, group: int) -> Job:
    """The sandbox job running `code` on test `k`: stdin tests feed the input on stdin; call
    tests append a harness that calls the function with the arguments written into the source
    and prints the JSON of the result as the last line."""
    case = tests.tests[k]
    # LiveCodeBench's programs get its import prelude; a raw (HumanEval-style) program is
    # exactly prefix + completion + suffix, its prefix carrying whatever it imports.
    code = (PRELUDE if tests.extract == "fenced" else "") + code
    if tests.fn_name is None:
        return Job(code, case.input.encode("utf-8", "replace"), group)
    args = json.dumps(call_arguments(case.input))
    name = tests.fn_name
    harness = (
        "\n\nimport json as _ticgrpo_json, sys as _ticgrpo_sys\n"
        f"_ticgrpo_args = _ticgrpo_json.loads({args!r})\n"
        f"if 'Solution' in globals() and hasattr(Solution, {name!r}):\n"
        f"    _ticgrpo_fn = getattr(Solution(), {name!r})\n"
        "else:\n"
        f"    _ticgrpo_fn = globals()[{name!r}]\n"
        "_ticgrpo_out = _ticgrpo_json.dumps(_ticgrpo_fn(*_ticgrpo_args))\n"
        "_ticgrpo_sys.stdout.write('\\n' + _ticgrpo_out + '\\n')\n"
    )
    return Job(code + harness, b"", group)


def _numbers(tokens: list[str]) -> list[Decimal] | None:
    try:
        return [Decimal(t) for t in tokens]
    except InvalidOperation:
        return None


def stdout_matches(got: str, expected: str) -> bool:
    """LiveCodeBench's stdin/stdout comparison (see the module docstring)."""
    got_lines = [line.strip() for line in got.strip().splitlines()]
    exp_lines = [line.strip() for line in expected.strip().splitlines()]
    if len(got_lines) != len(exp_lines):
        return False
    for g, e in zip(got_lines, exp_lines):
        if g == e:
            continue
        gt, et = g.split(), e.split()
        if len(gt) != len(et) or gt == []:
            return False
        gn, en = _numbers(gt), _numbers(et)
        if gn is None or en is None or gn != en:
            return False
    return True


def call_matches(got: str, expected: str) -> bool:
    """The last non-empty line of `got`, parsed as JSON, equals `json.loads(expected)`."""
    lines = [line for line in got.splitlines() if line.strip()]
    if not lines:
        return False
    try:
        return json.loads(lines[-1]) == json.loads(expected)
    except (json.JSONDecodeError, RecursionError):
        return False


def verdict_of(result: RunResult, tests: CodeTests, k: int) -> str:
    """One run's verdict against test `k`."""
    if result.status == "ok":
        got = result.stdout.decode("utf-8", "replace")
        expected = tests.tests[k].output
        ok = stdout_matches if tests.fn_name is None else call_matches
        return "passed" if ok(got, expected) else "wrong_answer"
    return {
        "error": "runtime_error",
        "timeout": "timeout",
        "memory": "memory",
        "output_limit": "wrong_answer",  # the expected output is far shorter than the cap
        "sandbox_error": "sandbox_error",
        "skipped": "skipped",
    }[result.status]


def judge(
    programs: list[str | None],
    tests: list[CodeTests],
    pool: SandboxPool,
    limits: Limits,
    *,
    partial: bool = False,
) -> list[Verdict]:
    """Verdicts of `programs[i]` (None: no code) on `tests[i]`, all run in one pool batch.

    `partial=False` stops a program at its first failing test (its other tests are "skipped").
    The output cap is raised to twice the longest expected output plus 64 KiB when needed.
    Identical (program, tests) pairs — frequent within a GRPO group — are run once.
    """
    if len(programs) != len(tests):
        raise ValueError(f"judge: {len(programs)} programs but {len(tests)} test sets")
    longest = max((len(t.output) for ts in tests for t in ts.tests), default=0)
    if limits.output_bytes < 2 * longest + 65536:
        limits = replace(limits, output_bytes=2 * longest + 65536)
    first: dict[tuple[str, CodeTests], int] = {}  # identical (program, tests): judged once
    jobs, owner = [], []
    for i, (code, ts) in enumerate(zip(programs, tests)):
        if code is None or first.setdefault((code, ts), i) != i:
            continue
        for k in range(len(ts.tests)):
            jobs.append(build_job(code, ts, k, group=i))
            owner.append((i, k))

    def keep_going(j: int, result: RunResult) -> bool:
        i, k = owner[j]
        return partial or verdict_of(result, tests[i], k) == "passed"

    results = pool.run(jobs, limits, keep_going=keep_going)
    per: list[list[str]] = [[] for _ in programs]
    seconds = [0.0] * len(programs)
    for (i, k), result in zip(owner, results):
        per[i].append(verdict_of(result, tests[i], k))
        seconds[i] += result.seconds
    verdicts = []
    for code, ts in zip(programs, tests):
        total = len(ts.tests)
        if code is None:
            verdicts.append(Verdict("no_code", 0, total, ()))
            continue
        j = first[(code, ts)]
        passed = per[j].count("passed")
        failed = [v for v in per[j] if v not in ("passed", "skipped")]
        status = "passed" if passed == total else failed[0]
        verdicts.append(Verdict(status, passed, total, tuple(per[j]), seconds[j]))
    return verdicts
