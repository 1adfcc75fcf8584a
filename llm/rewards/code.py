"""The "code" reward: run the completion's program against the problem's tests in the sandbox.

`get_reward("code")(completions, answers)`: each answer is a problem's JSON test spec (what the
code loader writes; `llm.sandbox.judge.parse_tests`), each completion's program is its last
fenced code block (or, for `extract: "raw"` problems, the whole completion between the problem's
prefix and suffix). All programs × tests of a call run in one `SandboxPool` batch on the
machine's cores (`llm/sandbox/`, docs/SANDBOX.md).

- reward 1.0 when every test passes, else 0.0; with `partial=True`, the fraction of tests
  passed (then every test runs; by default a program stops at its first failing test).
- per-item status, counted in `Reward.stats` like the maths reward's checks: passed,
  wrong_answer, runtime_error, timeout, memory, no_code (no closed fenced block, or an empty or
  oversized one), sandbox_error.
- `timeout_s` is the wall-clock limit of one test run (LiveCodeBench: 6 s), CPU time is capped
  at its ceiling; `memory_mb` is the address space per process.
- untrusted code runs only in bubblewrap: a machine without it fails when the reward is built
  (a `ConfigError` naming the package, so `ticgrpo train` stops before loading the model). `sandbox="unsandboxed"` runs it without isolation and is refused unless
  `allow_unsandboxed=True` is given too (trusted code only).
"""

from __future__ import annotations

import threading
from functools import lru_cache

from llm.config.train_config import ConfigError
from llm.rewards.registry import RewardStats, register_reward
from llm.sandbox import BACKENDS, Limits, SandboxPool, SandboxUnavailable
from llm.sandbox.judge import CodeTests, judge, parse_tests, program_of

_POOLS: dict[tuple, SandboxPool] = {}
_LOCK = threading.Lock()


def _pool(workers: int | None, sandbox: str, allow_unsandboxed: bool) -> SandboxPool:
    key = (workers, sandbox, allow_unsandboxed)
    with _LOCK:
        if key not in _POOLS:
            _POOLS[key] = SandboxPool(workers, backend=sandbox, allow_unsandboxed=allow_unsandboxed)
        return _POOLS[key]


@lru_cache(maxsize=256)  # a step's P problems; LiveCodeBench test specs can be megabytes each
def _tests(answer: str) -> CodeTests:
    return parse_tests(answer)


def _check_code_options(options: dict) -> None:
    """Option values, checked when the reward is built; the sandbox is checked here too, so a
    machine without bubblewrap fails before any model is loaded."""
    sandbox = options.get("sandbox", "bwrap")
    if sandbox not in BACKENDS:
        raise ValueError(f"reward 'code': sandbox must be one of {BACKENDS}, got {sandbox!r}")
    for key in ("partial", "allow_unsandboxed"):
        if not isinstance(options.get(key, False), bool):
            raise ValueError(f"reward 'code': {key} must be true or false")
    for key in ("memory_mb", "num_workers", "max_code_chars"):
        value = options.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"reward 'code': {key} must be an integer, got {value!r}")
    Limits(time_s=options.get("timeout_s", 6.0), memory_mb=options.get("memory_mb", 1024))
    try:
        _pool(options.get("num_workers"), sandbox, options.get("allow_unsandboxed", False))
    except SandboxUnavailable as exc:  # a config problem: `ticgrpo train/eval` print it, exit 2
        raise ConfigError([f"reward 'code': {exc}"]) from None


@register_reward("code", check=_check_code_options)
def code_reward(
    completions: list[str],
    answers: list[str],
    *,
    timeout_s: float = 6.0,
    partial: bool = False,
    memory_mb: int = 1024,
    num_workers: int | None = None,
    max_code_chars: int = 100_000,
    sandbox: str = "bwrap",
    allow_unsandboxed: bool = False,
    stats: RewardStats | None = None,
) -> list[float]:
    """1.0 where the program passes every test (or the fraction passed, `partial=True`)."""
    stats = stats if stats is not None else RewardStats()
    specs = []
    for i, answer in enumerate(answers):
        try:
            specs.append(_tests(answer))
        except ValueError as exc:
            raise ValueError(f"reward 'code': item {i}: {exc}; is this a code data file?") from None
    programs = [program_of(c, s, max_code_chars) for c, s in zip(completions, specs)]
    pool = _pool(num_workers, sandbox, allow_unsandboxed)
    limits = Limits(time_s=timeout_s, memory_mb=memory_mb)
    verdicts = judge(programs, specs, pool, limits, partial=partial)
    stats.counts.update(v.status for v in verdicts)
    stats.last_seconds = [v.seconds for v in verdicts]  # a duplicate repeats its original's
    if partial:
        return [v.passed / v.total for v in verdicts]
    return [float(v.status == "passed") for v in verdicts]
