"""Reward throughput: items/s of the "math" reward (worker pool) and "answer_tag" on typical
completions (~1.5 kB of reasoning ending in a boxed answer; half correct; all answers
distinct: integers, fractions, surds, polynomials, intervals).

    PYTHONPATH=. python bench/bench_rewards.py [--items 512] [--workers 1 2 4]

Prints a table and writes bench/results/rewards.json. The first call includes starting the
workers (each imports sympy + math-verify); it is reported separately as `cold_s`.
"""

from __future__ import annotations

import argparse
import random
import time

from bench._common import print_table, write_json
from llm.rewards.registry import get_reward, shutdown_pools


def _answer(rng: random.Random) -> tuple[str, str, str]:
    """(ground truth, an equivalent spelling, a wrong one), distinct across calls, so that
    math-verify's own parse caches do not flatter the numbers."""
    a, b, c = rng.randint(2, 999), rng.randint(2, 99), rng.randint(2, 9)
    kind = rng.randrange(5)
    if kind == 0:
        return str(a), f"{a}.0", str(a + 1)
    if kind == 1:
        return f"\\frac{{{a}}}{{{a * b}}}", f"\\frac{{1}}{{{b}}}", f"\\frac{{1}}{{{b + 1}}}"
    if kind == 2:
        return f"{a}\\sqrt{{{c}}}", f"\\sqrt{{{a * a * c}}}", f"{a}\\sqrt{{{c + 1}}}"
    if kind == 3:
        return f"x^2+{b + c}x+{b * c}", f"(x+{b})(x+{c})", f"(x+{b})(x-{c})"
    return f"({a},{a + b}]", f"({a},{a + b}]", f"[{a},{a + b}]"


def make_batch(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """n completions (~1.5 kB each, boxed final answer, half correct) and their ground truths."""
    rng = random.Random(seed)
    filler = "We expand the expression and collect like terms, then check the boundary case. "
    completions, answers = [], []
    for _ in range(n):
        gold, right, wrong = _answer(rng)
        pred = right if rng.random() < 0.5 else wrong
        body = filler * rng.randint(12, 24)
        completions.append(f"{body}\nTherefore the answer is $\\boxed{{{pred}}}$.\nAnswer: {pred}")
        answers.append(gold)
    return completions, answers


def bench_math(n: int, workers: int, repeats: int) -> dict:
    completions, answers = make_batch(n)
    reward = get_reward("math", timeout_s=5.0, num_workers=workers)
    t0 = time.perf_counter()
    reward(completions[:8], answers[:8])
    cold = time.perf_counter() - t0
    times = []
    for k in range(repeats):  # a fresh batch each time: no cache hits across repeats
        completions, answers = make_batch(n, seed=1 + k)
        t0 = time.perf_counter()
        scores = reward(completions, answers)
        times.append(time.perf_counter() - t0)
    shutdown_pools()
    best = min(times)
    return {
        "reward": "math",
        "workers": workers,
        "items": n,
        "cold_s": round(cold, 3),
        "batch_s": round(best, 3),
        "items_per_s": round(n / best, 1),
        "ms_per_item": round(1000 * best / n, 3),
        "mean_reward": round(sum(scores) / n, 3),
    }


def bench_answer_tag(n: int, repeats: int) -> dict:
    completions, answers = make_batch(n)
    reward = get_reward("answer_tag")
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        scores = reward(completions, answers)
        times.append(time.perf_counter() - t0)
    best = min(times)
    return {
        "reward": "answer_tag",
        "workers": 0,
        "items": n,
        "cold_s": 0.0,
        "batch_s": round(best, 4),
        "items_per_s": round(n / best, 1),
        "ms_per_item": round(1000 * best / n, 4),
        "mean_reward": round(sum(scores) / n, 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=512)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    rows = [bench_math(args.items, w, args.repeats) for w in args.workers]
    rows.append(bench_answer_tag(args.items, args.repeats))
    columns = ["reward", "workers", "items", "cold_s", "batch_s", "items_per_s", "ms_per_item"]
    print_table(rows, columns + ["mean_reward"])
    path = write_json("rewards", {"rows": rows, "args": vars(args)})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
