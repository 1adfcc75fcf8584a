"""Code reward throughput: a batch of 64 completions × 10 tests judged in the sandbox.

    PYTHONPATH=. python bench/bench_code_reward.py [--completions 64] [--tests 10] [--workers 1 2 16]

The batch is LiveCodeBench-like: stdin problems (read n numbers, print a statistic), each
completion distinct (so none is judged once for several), 50% right, 25% wrong from the first
test, 25% crashing on inputs of more than 150 numbers (about a quarter of the tests), and
`--stalls` completions that loop forever. `runs` counts the sandbox runs actually made. Rows:

- `all_or_nothing` (the default reward; a program stops at its first failing test) and
  `partial` (every test runs);
- `stalls`: the same batch with the looping completions; each stall costs its own time limit
  on one slot, so the batch grows by about `stalls × timeout_s / workers`, not by the number of
  tests.

Prints a table and writes bench/results/code_reward.json. `single_run_ms` is one trivial
program's latency (bwrap set-up + interpreter start), the floor of every run.
"""

from __future__ import annotations

import argparse
import random
import time

from bench._common import print_table, write_json
from llm.rewards.registry import get_reward
from llm.sandbox import Job, Limits, SandboxPool, default_workers
from llm.sandbox.judge import CodeTest, CodeTests, encode_tests

STATS = {
    "sum": ("print(sum(xs))", "print(sum(xs) + 1)"),
    "max": ("print(max(xs))", "print(min(xs) - 1)"),
    "sorted": ("print(*sorted(xs))", "print(*xs)"),
}
READ = "n = int(input())\nxs = list(map(int, input().split()))\n"


def _problem(rng: random.Random, stat: str, n_tests: int) -> str:
    tests = []
    for _ in range(n_tests):
        xs = [rng.randint(-1000, 1000) for _ in range(rng.randint(5, 200))]
        out = {"sum": str(sum(xs)), "max": str(max(xs)), "sorted": " ".join(map(str, sorted(xs)))}
        tests.append(CodeTest(f"{len(xs)}\n{' '.join(map(str, xs))}\n", out[stat]))
    return encode_tests(CodeTests(tuple(tests)))


def make_batch(n: int, n_tests: int, stalls: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """n completions (each distinct) and their problems' test specs (see the module docstring)."""
    rng = random.Random(seed)
    problems = {s: _problem(rng, s, n_tests) for s in STATS}
    completions, answers = [], []
    for i in range(n):
        stat = list(STATS)[i % len(STATS)]
        right, wrong = STATS[stat]
        kind = i % 16
        if i < stalls:
            body = "while True:\n    pass"
        elif kind < 8:
            body = READ + right
        elif kind < 12:
            body = READ + wrong
        else:  # right, but reads past its input when n > 150 (about a quarter of the tests)
            body = READ + right + "\nif n > 150:\n    input()"
        completions.append(f"Solution {i}:\n```python\n# completion {i}\n{body}\n```")
        answers.append(problems[stat])
    return completions, answers


def bench(n: int, n_tests: int, workers: int, partial: bool, stalls: int, timeout_s: float,
          repeats: int) -> dict:  # fmt: skip
    completions, answers = make_batch(n, n_tests, stalls)
    reward = get_reward("code", timeout_s=timeout_s, partial=partial, num_workers=workers)
    reward(completions[:2], answers[:2])  # warm: pool built, backend checked
    times = []
    for _ in range(repeats):
        reward.stats.counts.clear()
        with _CountRuns() as counted:
            t0 = time.perf_counter()
            scores = reward(completions, answers)
            times.append(time.perf_counter() - t0)
    counts, runs = dict(reward.stats.counts), counted.runs
    best = min(times)
    return {
        "mode": ("partial" if partial else "all_or_nothing")
        + (f"+{stalls}stalls" if stalls else ""),
        "workers": workers,
        "completions": n,
        "tests": n_tests,
        "runs": runs,
        "batch_s": round(best, 3),
        "runs_per_s": round(runs / best, 1),
        "completions_per_s": round(n / best, 1),
        "mean_reward": round(sum(scores) / n, 3),
        "statuses": counts,
    }


class _CountRuns:
    """Counts the sandbox runs a batch makes (results other than "skipped")."""

    def __init__(self) -> None:
        self.runs = 0
        self._real = SandboxPool.run

    def __enter__(self):
        counter = self

        def run(pool, jobs, limits, **kw):
            results = counter._real(pool, jobs, limits, **kw)
            counter.runs += sum(r.status != "skipped" for r in results)
            return results

        SandboxPool.run = run
        return self

    def __exit__(self, *exc) -> None:
        SandboxPool.run = self._real


def single_run_ms(repeats: int = 20) -> float:
    pool = SandboxPool(1)
    limits = Limits(time_s=5)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        pool.run([Job("pass")], limits)
        times.append(time.perf_counter() - t0)
    return round(1000 * sorted(times)[len(times) // 2], 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--completions", type=int, default=64)
    p.add_argument("--tests", type=int, default=10)
    p.add_argument("--workers", type=int, nargs="+", default=sorted({1, default_workers()}))
    p.add_argument("--stalls", type=int, default=4)
    p.add_argument("--timeout-s", type=float, default=2.0)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    rows = []
    for w in args.workers:
        for partial in (False, True):
            rows.append(bench(args.completions, args.tests, w, partial, 0, args.timeout_s,
                              args.repeats))  # fmt: skip
        rows.append(bench(args.completions, args.tests, w, False, args.stalls, args.timeout_s,
                          args.repeats))  # fmt: skip
    latency = single_run_ms()
    columns = ["mode", "workers", "completions", "tests", "runs", "batch_s", "runs_per_s"]
    print_table(rows, columns + ["completions_per_s", "mean_reward"])
    print(f"single run latency (median of 20): {latency} ms")
    path = write_json("code_reward", {"rows": rows, "single_run_ms": latency, "args": vars(args)})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
