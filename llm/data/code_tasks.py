"""A tiny code task for the tiny model: complete ``print(...)`` so that it prints the answer.

Rows are the synthetic problems of ``llm.data.tasks`` (``"repeat 7"`` -> ``7``, ``"3 plus 4"`` -> ``7``)
written in the code loader's ``tests`` schema: one stdin-less test whose expected output is the
answer, ``prefix="print("``, ``suffix=")\\n"`` and ``extract="raw"``, so the program judged in the
sandbox is ``print(<completion>)``. The tiny tokenizer knows only the task's characters (no
backticks, no brackets), so the model cannot write a fenced block; completing a program the
prompt starts is the HumanEval shape of a code task, and everything after the completion — the
sandbox run, the exit status, the output comparison, the per-status counts — is the code
reward's real path. A completion that is not a Python expression is a runtime error (``7 7``,
``repeat``), one that evaluates to another value a wrong answer.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from llm.data.readers import write_jsonl
from llm.data.tasks import make_problem

PREFIX, SUFFIX = "print(", ")\n"


def code_task_row(problem: str, answer: str) -> dict:
    """One row of the code loader's ``tests`` schema for a tiny (problem, answer) pair."""
    return {
        "problem": problem,
        "tests": [{"input": "", "output": answer}],
        "prefix": PREFIX,
        "suffix": SUFFIX,
        "extract": "raw",
    }


def write_tiny_code_task(path: str | os.PathLike, n: int, seed: int, *, kind: str = "copy") -> Path:
    """Write ``n`` tiny code problems of task ``kind`` (``llm.tasks.TASKS``) as jsonl.

    Deterministic in ``seed``; the parent folder is created. Returns the path.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = random.Random(seed)
    return write_jsonl((code_task_row(*make_problem(rng, kind)) for _ in range(n)), path)
