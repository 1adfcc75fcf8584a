"""The synthetic tasks of the `tiny` preset, and their reward.

- ``copy`` (the preset's): ``"repeat 7"`` -> ``"7"``.
- ``add``: ``"3 plus 4"`` -> ``"7"`` (sums stay below 10: every answer is one digit).

The reward ``tiny_task`` is 1.0 when the first integer written in the completion is the answer
and 0.0 otherwise.

Why ``copy`` is the default: a randomly initialised tiny model spreads its tokens almost
uniformly over its ~40-token vocabulary, so a completion starts its first integer with the right
digit only a few percent of the time (mean reward ~0.05, well below 0.3); to do better the policy
must attend to the one digit of the prompt, which a 2-layer transformer learns within a few
hundred RL steps (a curve that rises within a minute or two on a CPU). ``add`` needs the whole
addition table and takes far longer; it is there for longer demonstrations. Everything is
generated locally from a seed; nothing is downloaded.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

from llm.data.readers import write_jsonl
from llm.rewards.registry import register_reward

#: Words of the tasks' problems (the tiny tokenizer's vocabulary is learnt from them).
TASK_WORDS = ("repeat", "plus")
#: Largest answer: answers are the single digits "0" ... "9".
MAX_ANSWER = 9


def _copy(rng: random.Random) -> tuple[str, str]:
    digit = rng.randint(0, MAX_ANSWER)
    return f"repeat {digit}", str(digit)


def _add(rng: random.Random) -> tuple[str, str]:
    total = rng.randint(0, MAX_ANSWER)
    a = rng.randint(0, total)
    return f"{a} plus {total - a}", str(total)


#: kind -> generator of one (problem, answer) pair.
TASKS = {"copy": _copy, "add": _add}


def make_problem(rng: random.Random, kind: str = "copy") -> tuple[str, str]:
    """One (problem, answer) pair of task ``kind`` (a key of ``TASKS``)."""
    if kind not in TASKS:
        raise ValueError(f"unknown tiny task {kind!r}; expected one of {sorted(TASKS)}")
    return TASKS[kind](rng)


def write_tiny_task(path: str | os.PathLike, n: int, seed: int, *, kind: str = "copy") -> Path:
    """Write ``n`` problems of task ``kind`` as jsonl in the plain schema
    (``{"problem": ..., "answer": ...}``).

    Deterministic in ``seed``; the parent folder is created. Returns the path.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = random.Random(seed)
    rows = [make_problem(rng, kind) for _ in range(n)]
    return write_jsonl(({"problem": problem, "answer": answer} for problem, answer in rows), path)


_INTEGER = re.compile(r"\d+")


def first_integer(text: str) -> str | None:
    """The first run of ASCII digits in ``text`` (``"x 12 y 3"`` -> ``"12"``), or None."""
    match = _INTEGER.search(text[:10_000])
    return match.group(0) if match else None


@register_reward("tiny_task")
def tiny_task_reward(completions: list[str], answers: list[str]) -> list[float]:
    """1.0 where the completion's first integer equals the answer (after stripping), else 0.0."""
    if len(completions) != len(answers):
        raise ValueError(
            f"tiny_task reward: {len(completions)} completions but {len(answers)} answers"
        )
    return [float(first_integer(c) == str(a).strip()) for c, a in zip(completions, answers)]
