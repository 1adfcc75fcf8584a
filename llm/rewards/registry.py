"""Reward functions for model completions, registered by name.

A reward function is a plain callable `fn(completions, answers, **options) -> list[float]`
registered with `@register_reward(name)`. `get_reward(name, **options)` returns a `Reward`: the
same call signature `(completions: list[str], answers: list[str]) -> list[float]` (length N, each
value finite and in [0, 1]), plus cumulative counters in `.stats` for the run's log.

Built-ins:

- "math": the completion's LAST `\\boxed{...}` compared with the ground truth by math-verify
  (`parse` with LaTeX extraction, then `verify`), in worker processes with a hard per-item
  deadline `timeout_s` (see `llm/rewards/math_worker.py`). Before anything reaches a worker, cheap
  in-process guards (`llm/rewards/guards.py`) bound the work: only the last
  `max_completion_chars` characters are looked at, the boxed answer must close within `max_answer_chars` characters and nest braces at most
  `MAX_BRACE_DEPTH` deep, and integer power towers / factorials whose value would have more than
  `MAX_DIGITS` digits are rejected (score 0) instead of being computed. The ground truth passes
  the same guards, and a batch has a wall-clock budget (`batch_timeout`), so hostile items
  cannot each cost a deadline in turn.
- "answer_tag": DAPO-style — the last "Answer: X" line, exact match after Minerva normalisation
  (Lewkowycz et al. 2022), as in the DAPO-Math-17K prompts. Pure string work on the last 300
  characters, so bounded without a worker.

Model text is never executed: no `eval`/`exec` here, and the workers refuse sympy's string parser
except for single numbers or names (see `math_worker._guarded`).
"""

from __future__ import annotations

import atexit
import functools
import inspect
import math
import os
import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from llm.rewards.guards import (
    MAX_BRACE_DEPTH,
    MAX_DIGITS,
    MAX_FACTORIAL,
    brace_depth,
    last_boxed,
    power_digits,
    screen_answer,
)
from llm.rewards.math_worker import VerifierPool
from llm.rewards.normalize import normalize_answer

RewardFn = Callable[..., list[float]]
__all__ = [
    "MAX_BRACE_DEPTH",
    "MAX_DIGITS",
    "MAX_FACTORIAL",
    "Reward",
    "RewardStats",
    "UnknownRewardError",
    "answer_tag_reward",
    "available_rewards",
    "brace_depth",
    "get_reward",
    "last_boxed",
    "math_reward",
    "normalize_answer",
    "power_digits",
    "register_reward",
    "screen_answer",
    "shutdown_pools",
]

#: Modules that register rewards on import; loaded on demand by `get_reward`.
_PLUGIN_MODULES = ("llm.data.tasks", "llm.rewards.code")
_REGISTRY: dict[str, RewardFn] = {}
_CHECKS: dict[str, Callable[[dict], None]] = {}


class UnknownRewardError(KeyError, ValueError):
    """`get_reward` with a name nobody registered (printed without KeyError's quotes)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass
class RewardStats:
    """Cumulative outcome counts of one `Reward` (e.g. {"ok": 90, "timeout": 1, "no_box": 9}).

    `last_seconds[i]` is the time item i of the latest call spent on a worker (0 when decided
    in-process). `as_log()` gives namespaced keys for the run's metrics line.
    """

    counts: Counter = field(default_factory=Counter)
    calls: int = 0
    items: int = 0
    last_seconds: list[float] = field(default_factory=list)

    def as_log(self, prefix: str = "reward/") -> dict[str, float]:
        return {f"{prefix}{k}": float(v) for k, v in sorted(self.counts.items())}


class Reward:
    """A registered reward bound to its options; checks inputs and sanitises outputs."""

    def __init__(self, name: str, fn: RewardFn, options: dict) -> None:
        self.name, self.fn, self.options = name, fn, dict(options)
        self.stats = RewardStats()
        self._takes_stats = "stats" in inspect.signature(fn).parameters

    def __call__(self, completions: list[str], answers: list[str]) -> list[float]:
        completions, answers = list(completions), list(answers)
        if len(completions) != len(answers):
            raise ValueError(
                f"reward {self.name!r}: {len(completions)} completions but {len(answers)} answers"
            )
        for i, (c, a) in enumerate(zip(completions, answers)):
            if not isinstance(c, str) or not isinstance(a, str):
                raise TypeError(
                    f"reward {self.name!r}: item {i}: completion and answer must be str, "
                    f"got {type(c).__name__} and {type(a).__name__}"
                )
        kwargs = dict(self.options)
        if self._takes_stats:
            kwargs["stats"] = self.stats
        raw = self.fn(completions, answers, **kwargs)
        if len(raw) != len(completions):
            raise ValueError(
                f"reward {self.name!r} returned {len(raw)} values for {len(completions)} items"
            )
        self.stats.calls += 1
        self.stats.items += len(completions)
        return [self._clean(r) for r in raw]

    def _clean(self, r) -> float:
        """Non-finite or non-numeric -> 0.0 (counted); out-of-range -> clipped to [0, 1]."""
        try:
            r = float(r)
        except (TypeError, ValueError):
            r = math.nan
        if not math.isfinite(r):
            self.stats.counts["nonfinite"] += 1
            return 0.0
        if not 0.0 <= r <= 1.0:
            self.stats.counts["out_of_range"] += 1
        return min(1.0, max(0.0, r))

    def __repr__(self) -> str:
        return f"Reward({self.name!r}, {self.options})"


def register_reward(
    name: str, *, check: Callable[[dict], None] | None = None
) -> Callable[[RewardFn], RewardFn]:
    """Decorator: register `fn(completions, answers, **options) -> list[float]` under `name`.

    An option named `stats` receives the `Reward`'s `RewardStats` to count outcomes in.
    `check(options)` (optional) raises ValueError for bad option values at `get_reward` time,
    i.e. while the trainer validates its config, before any model is loaded.
    """

    def decorate(fn: RewardFn) -> RewardFn:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"a reward named {name!r} is already registered")
        _REGISTRY[name] = fn
        if check is not None:
            _CHECKS[name] = check
        return fn

    return decorate


def available_rewards() -> list[str]:
    """Names accepted by `get_reward`, sorted."""
    _load_plugins()
    return sorted(_REGISTRY)


def _load_plugins() -> None:
    import importlib

    for module in _PLUGIN_MODULES:
        importlib.import_module(module)


def get_reward(name: str, **options) -> Reward:
    """The reward registered as `name`, bound to `options` (checked against its signature).

    `timeout_s` is accepted by every reward; it is passed on to functions that take it and
    dropped for those that don't (they are in-process and bounded by construction).
    """
    if name not in _REGISTRY:
        _load_plugins()
    if name not in _REGISTRY:
        raise UnknownRewardError(
            f"unknown reward {name!r}; available: {', '.join(sorted(_REGISTRY))}"
        )
    fn = _REGISTRY[name]
    params = inspect.signature(fn).parameters
    if "timeout_s" in options and "timeout_s" not in params:
        options.pop("timeout_s")
    accepted = [p for p in list(params)[2:] if p != "stats"]
    unknown = sorted(set(options) - set(accepted))
    if unknown or "stats" in options:
        raise TypeError(
            f"reward {name!r} does not take option(s) {unknown or ['stats']}; "
            f"it takes: {', '.join(accepted) or 'none'}"
        )
    timeout = options.get("timeout_s")
    if timeout is not None and not (
        isinstance(timeout, int | float)
        and not isinstance(timeout, bool)
        and 0 < timeout < math.inf
    ):
        raise ValueError(f"reward {name!r}: timeout_s must be a positive number, got {timeout!r}")
    if name in _CHECKS:
        _CHECKS[name](options)
    return Reward(name, fn, options)


# ----------------------------------------------------------------------------- "math"


@functools.lru_cache(maxsize=4096)  # a group's G completions share one gold answer
def _gold_latex(answer: str, max_answer_chars: int) -> str | None:
    """The ground truth as a boxed LaTeX string for math-verify (an already boxed one as is),
    or None when the guards refuse it like a completion's answer (too long, deep or huge)."""
    answer = answer.replace("\x00", "").strip()
    if len(answer) > max_answer_chars + len("\\boxed{}"):
        return None
    inner, status = last_boxed(answer, len(answer))
    inner = inner if status == "ok" else answer
    if screen_answer(inner, max_answer_chars) is not None:
        return None
    return f"\\boxed{{{inner}}}"


_POOLS: dict[tuple[int, int], VerifierPool] = {}
_POOL_LOCK = threading.Lock()


def default_num_workers() -> int:
    """Half the CPU cores, between 2 and 8 (idle workers cost memory only)."""
    return min(8, max(2, (os.cpu_count() or 2) // 2))


def _pool(num_workers: int, memory_limit_mb: int) -> VerifierPool:
    key = (num_workers, memory_limit_mb)
    if key not in _POOLS or _POOLS[key].owner_pid != os.getpid():
        _POOLS[key] = VerifierPool(num_workers, memory_limit_mb=memory_limit_mb)
    return _POOLS[key]


@atexit.register
def shutdown_pools() -> None:
    """Kill this process's worker processes (also run at interpreter exit)."""
    with _POOL_LOCK:
        for pool in _POOLS.values():
            if pool.owner_pid == os.getpid():
                pool.close()
        _POOLS.clear()


def batch_timeout(n: int, timeout_s: float, num_workers: int, item_budget_s: float) -> float:
    """Wall-clock budget of a batch of ``n`` worker items: one full item deadline plus
    ``item_budget_s`` per item spread over the workers, ``timeout_s + n·item_budget_s / W``.

    A normal item takes tens of milliseconds, so a batch of them finishes far inside it; a
    batch of hostile items that each burn a whole deadline is cut at this bound instead of
    costing ``n / W`` deadlines (64 such items on 2 workers: 5 + 8 s, not 160 s).
    """
    return timeout_s + n * item_budget_s / num_workers


def _check_math_options(options: dict) -> None:
    budget = options.get("item_budget_s")
    if budget is not None and not (
        isinstance(budget, int | float) and not isinstance(budget, bool) and 0 < budget < math.inf
    ):
        raise ValueError(f"reward 'math': item_budget_s must be a positive number, got {budget!r}")
    for key in ("num_workers", "max_completion_chars", "max_answer_chars", "memory_limit_mb"):
        value = options.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"reward 'math': {key} must be a non-negative integer, got {value!r}")
        if value == 0 and key != "memory_limit_mb":  # memory_limit_mb=0 means no cap
            raise ValueError(f"reward 'math': {key} must be >= 1, got 0")


@register_reward("math", check=_check_math_options)
def math_reward(
    completions: list[str],
    answers: list[str],
    *,
    timeout_s: float = 5.0,
    num_workers: int | None = None,
    max_completion_chars: int = 10_000,
    max_answer_chars: int = 1_000,
    memory_limit_mb: int = 4096,
    item_budget_s: float = 0.25,
    stats: RewardStats | None = None,
) -> list[float]:
    """1.0 where the last `\\boxed{}` of the completion equals the answer per math-verify, else 0.

    Each item that reaches a worker gets at most `timeout_s` seconds of wall time from the
    moment it is sent (then the worker is killed and replaced, and the item scores 0), and
    the batch at most ``batch_timeout(n, timeout_s, W, item_budget_s)`` (items left then score
    0, status "batch_timeout"). The ground truth passes the same guards as the completion's
    answer (at most `max_answer_chars` characters, no huge power, no deep nesting); a gold
    answer they refuse scores every item 0 with status "gold_rejected".
    """
    stats = stats if stats is not None else RewardStats()
    n = len(completions)
    scores, statuses, seconds = [0.0] * n, ["ok"] * n, [0.0] * n
    jobs: list[tuple[str, str]] = []
    where: list[int] = []
    for i, (text, answer) in enumerate(zip(completions, answers)):
        tail = text[-max_completion_chars:].replace("\x00", "")
        content, status = last_boxed(tail, max_answer_chars)
        status = screen_answer(content, max_answer_chars) if content is not None else status
        if status not in (None, "ok"):
            statuses[i] = status
            continue
        gold = _gold_latex(answer, max_answer_chars)
        if gold is None:
            statuses[i] = "gold_rejected"
            continue
        jobs.append((f"\\boxed{{{content}}}", gold))
        where.append(i)
    if jobs:
        workers = num_workers or default_num_workers()
        budget = batch_timeout(len(jobs), timeout_s, workers, item_budget_s)
        with _POOL_LOCK:
            pool = _pool(workers, memory_limit_mb)
            result = pool.score(jobs, timeout_s, budget)
        for j, i in enumerate(where):
            scores[i], statuses[i], seconds[i] = (
                result.scores[j],
                result.statuses[j],
                result.seconds[j],
            )
        stats.counts["worker_restarts"] += result.restarts
    stats.counts.update(statuses)
    stats.last_seconds = seconds
    return scores


# ----------------------------------------------------------------------------- "answer_tag"

_ANSWER_LINE = re.compile(r"(?i)answer\s*:\s*([^\n]+)")


@register_reward("answer_tag")
def answer_tag_reward(
    completions: list[str],
    answers: list[str],
    *,
    timeout_s: float = 5.0,
    max_completion_chars: int = 300,
    stats: RewardStats | None = None,
) -> list[float]:
    """1.0 where the last "Answer: X" line (case-insensitive) normalises to the answer, else 0.

    DAPO's checker looks at the last 300 characters; so does this by default. `timeout_s` is
    accepted for a uniform interface: the work is bounded string handling on at most
    `max_completion_chars` characters, done in-process.
    """
    del timeout_s
    stats = stats if stats is not None else RewardStats()
    scores = []
    for text, answer in zip(completions, answers):
        found = _ANSWER_LINE.findall(text[-max_completion_chars:])
        if not found:
            stats.counts["no_answer"] += 1
            scores.append(0.0)
            continue
        ok = normalize_answer(found[-1]) == normalize_answer(answer)
        stats.counts["ok"] += 1
        scores.append(float(ok))
    return scores
