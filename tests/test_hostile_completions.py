"""Hostile model output: every completion is scored in bounded time, in [0, 1], with no side
effect, and the reward keeps working afterwards (issue 6, untrusted model output)."""

from __future__ import annotations

import math
import os
import signal
import threading
import time

import pytest

from llm.rewards import math_worker as _reward_worker
from llm.rewards.math_worker import VerifierPool
from llm.rewards.registry import get_reward

TIMEOUT_S = 2.0
#: Scheduling slack on a loaded 2-core machine (the deadline itself is exact).
MARGIN_S = 1.5


def hostile_cases(canary: str) -> list[tuple[str, str, float | None]]:
    """(completion, ground truth, expected score or None when any value in [0, 1] is fine)."""
    q = f"'{canary}'"
    mega = "Let me think. " * 80_000  # ~1.1 MB
    cases = [
        # enormous powers, towers, factorials
        (r"\boxed{9^{9^{9^{9}}}}", "3", 0.0),
        (r"\boxed{10**10**10}", "3", 0.0),
        (r"\boxed{10^{10^{10}}}", "3", 0.0),
        (r"\boxed{2^{2^{2^{2^{2^{2}}}}}}", "3", 0.0),
        (r"\boxed{10^{-10^{10}}}", "0", 0.0),
        (r"\boxed{9^{99999999}}", "3", 0.0),
        (r"\boxed{1000000!}", "3", 0.0),
        (r"\boxed{(10^{6})!}", "3", 0.0),
        (r"\boxed{\binom{10^{6}}{500000}}", "3", 0.0),
        (r"\boxed{(x+1)^{1000}}", "3", 0.0),
        (r"\boxed{\sum_{n=1}^{10^{10}} n}", "3", 0.0),
        ("10**10**10", "3", 0.0),
        # size: nesting, megabytes, many boxes
        (r"\boxed{" + "{" * 100_000 + "1" + "}" * 100_000 + "}", "1", 0.0),
        (r"\boxed{" + r"\frac{1}{" * 300 + "2" + "}" * 300 + "}", "1", 0.0),
        (r"\boxed{" * 100_000, "3", 0.0),
        (mega + r"\boxed{3}", "3", 1.0),
        (mega, "3", 0.0),
        (r"\boxed{" + "1+" * 200_000 + "1}", "3", 0.0),
        (r"\boxed{3}" * 100_000, "3", 1.0),
        # code and shell snippets pointed at the canary
        (rf"\boxed{{__import__('os').system('touch {canary}')}}", "0", 0.0),
        (rf"\boxed{{open({q}, 'w').write('x')}}", "3", 0.0),
        (rf"\boxed{{exec(\"open({q},'w')\")}}", "3", 0.0),
        (rf"\boxed{{eval(\"__import__('os').system('touch {canary}')\")}}", "3", 0.0),
        (rf"\boxed{{$(touch {canary})}}", "3", 0.0),
        (rf"\boxed{{`touch {canary}`}}", "3", 0.0),
        (rf"; touch {canary}; \boxed{{3}}", "3", 1.0),
        (rf"\boxed{{().__class__.__base__.__subclasses__()}} {canary}", "3", 0.0),
        (rf"\boxed{{\input{{{canary}}}}}", "3", 0.0),
        # unicode look-alikes, control characters
        (r"\boxed{３}", "3", None),  # fullwidth digit
        (r"\boxed{х+1}", "x+1", None),  # Cyrillic "х"
        ("\\boxed{3\u200d}", "3", None),  # zero-width joiner
        ("\\boxed{\u202e3\u202c}", "3", None),  # bidi override
        ("\\boxed{3\x00}\x00\x00", "3", None),  # null bytes
        ("\\boxed{\ud800}", "3", 0.0),  # lone surrogate
        ("\x1b[31m\\boxed{3}\x1b[0m", "3", 1.0),
        # NaN / inf spellings
        (r"\boxed{nan}", "3", 0.0),
        (r"\boxed{NaN}", "3", 0.0),
        (r"\boxed{float('nan')}", "3", 0.0),
        (r"\boxed{\infty}", "3", 0.0),
        (r"\boxed{-\infty}", "3", 0.0),
        (r"\boxed{1e999}", "3", 0.0),
        (r"\boxed{0/0}", "3", 0.0),
        (r"\boxed{\frac{1}{0}}", "3", 0.0),
        # malformed LaTeX
        (r"\boxed{\frac{1}", "3", 0.0),
        (r"\boxed{\left( 3}", "3", None),
        (r"\boxed{\begin{matrix} 1 & 2}", "3", 0.0),
        (r"\boxed{\def\x{\x}\x}", "3", 0.0),
        (r"\boxed{\sqrt[}", "3", 0.0),
        (r"\boxed{}", "3", 0.0),
        (r"\boxed{^^^___}", "3", 0.0),
    ]
    return cases


@pytest.fixture()
def canary(tmp_path):
    path = tmp_path / "CANARY"
    yield str(path)
    assert not path.exists(), "a hostile completion created the canary file"


def test_hostile_batch_is_bounded_harmless_and_the_pool_survives(canary, tmp_path):
    cases = hostile_cases(canary)
    assert len(cases) >= 30
    reward = get_reward("math", timeout_s=TIMEOUT_S, num_workers=2)
    cwd = os.getcwd()
    os.chdir(tmp_path)  # a relative "touch CANARY" would land here
    try:
        t0 = time.monotonic()
        scores = reward([c for c, _, _ in cases], [a for _, a, _ in cases])
        wall = time.monotonic() - t0
    finally:
        os.chdir(cwd)
    assert all(isinstance(s, float) and math.isfinite(s) and 0.0 <= s <= 1.0 for s in scores)
    mismatched = [(c[:60], s) for (c, _, e), s in zip(cases, scores) if e is not None and s != e]
    assert mismatched == []
    per_item = reward.stats.last_seconds
    assert max(per_item) <= TIMEOUT_S + MARGIN_S, per_item
    slow = sum(s > 0.5 * TIMEOUT_S for s in per_item)
    # Items overlap on the two workers: never slower than running the slow ones one by one.
    assert wall <= slow * TIMEOUT_S + 10.0
    assert not os.path.exists(tmp_path / "CANARY")
    # The same reward object still scores a normal batch correctly.
    assert reward([r"\boxed{\frac{1}{2}}", r"\boxed{2}"], ["0.5", "3"]) == [1.0, 0.0]


def test_hostile_completions_under_answer_tag(canary):
    cases = hostile_cases(canary)
    reward = get_reward("answer_tag", timeout_s=TIMEOUT_S)
    completions = [f"Answer: {c}" for c, _, _ in cases] + [c for c, _, _ in cases]
    t0 = time.monotonic()
    scores = reward(completions, [a for _, a, _ in cases] * 2)
    assert time.monotonic() - t0 < 2.0  # bounded string work on the last 300 characters
    assert all(math.isfinite(s) and 0.0 <= s <= 1.0 for s in scores)


def test_canary_snippet_is_live_under_a_naive_parser(canary, tmp_path):
    """Control: the snippet the suite feeds in really runs when text reaches sympy's parser."""
    from sympy.parsing.sympy_parser import parse_expr

    marker = tmp_path / "CONTROL"
    parse_expr(f"__import__('os').system('touch {marker}')")
    assert marker.exists()


def test_worker_parser_guard_refuses_code(tmp_path):
    from sympy.parsing.sympy_parser import parse_expr

    guarded = _reward_worker._guarded(parse_expr)
    assert (
        guarded("3") == 3 and str(guarded("kilo")) == "kilo" and float(guarded("1.5e3")) == 1500.0
    )
    for text in (f"__import__('os').system('touch {tmp_path}/X')", "x+1", "a.b", "f(1)", "1" * 500):
        with pytest.raises(ValueError, match="restricted to single atoms"):
            guarded(text)
    assert not (tmp_path / "X").exists()


def test_hard_deadline_kills_a_worker_the_soft_timer_cannot_stop(monkeypatch):
    # With the in-worker timer pushed past the deadline, only the parent's SIGKILL can stop
    # this item (9^99999999 is a single 95-million-digit big-integer power).
    monkeypatch.setattr(_reward_worker, "SOFT_FRACTION", 50.0)
    pool = VerifierPool(1)
    try:
        items = [(r"\boxed{9^{99999999}}", r"\boxed{3}"), (r"\boxed{3}", r"\boxed{3}")]
        out = pool.score(items, 1.0)
        assert out.statuses == ["timeout", "ok"] and out.scores == [0.0, 1.0]
        assert out.restarts == 1 and 1.0 <= out.seconds[0] <= 1.0 + MARGIN_S
    finally:
        pool.close()


def test_a_worker_that_dies_mid_item_is_replaced():
    pool = VerifierPool(1)
    try:
        pool.score([(r"\boxed{1}", r"\boxed{1}")], 5.0)  # wait until it is up
        victim = pool._workers[0].proc
        threading.Timer(0.3, victim.kill).start()
        items = [(r"\boxed{9^{99999999}}", r"\boxed{3}"), (r"\boxed{3}", r"\boxed{3}")]
        out = pool.score(items, 30.0)  # far from the deadline: only the kill ends item 0
        assert out.statuses == ["crash", "ok"] and out.scores == [0.0, 1.0]
        assert out.seconds[0] < 2.0 and victim.poll() is not None
    finally:
        pool.close()


def test_timeouts_of_a_batch_overlap_across_workers():
    pool = VerifierPool(2)
    try:
        pool.score([(r"\boxed{1}", r"\boxed{1}")] * 2, 5.0)
        t0 = time.monotonic()
        out = pool.score([(r"\boxed{9^{99999999}}", r"\boxed{3}")] * 4, 1.0)
        wall = time.monotonic() - t0
        assert set(out.statuses) <= {"soft_timeout", "timeout"} and out.scores == [0.0] * 4
        assert wall < 4 * 1.0  # one worker alone would need at least 4 s
    finally:
        pool.close()


def test_worker_runs_capped_in_its_own_session():
    pool = VerifierPool(1, memory_limit_mb=1536)
    try:
        pool.score([(r"\boxed{1}", r"\boxed{1}")], 5.0)
        pid = pool._workers[0].proc.pid
        with open(f"/proc/{pid}/limits") as f:
            line = next(ln for ln in f if ln.startswith("Max address space"))
        assert line.split()[3:5] == [str(1536 * 2**20)] * 2
        assert os.getsid(pid) != os.getsid(0)  # Ctrl-C in the trainer's terminal skips it
    finally:
        pool.close()


def test_a_dead_spare_is_replaced_when_promoted(monkeypatch):
    monkeypatch.setattr(_reward_worker, "SOFT_FRACTION", 50.0)
    pool = VerifierPool(1)
    try:
        pool.score([(r"\boxed{1}", r"\boxed{1}")], 5.0)
        pool._spare.proc.kill()
        pool._spare.proc.wait()
        items = [(r"\boxed{9^{99999999}}", r"\boxed{3}"), (r"\boxed{3}", r"\boxed{3}")]
        out = pool.score(items, 1.0)
        assert out.statuses == ["timeout", "ok"] and out.scores == [0.0, 1.0]
        assert out.restarts == 2  # the stuck worker, then the dead spare that replaced it
    finally:
        pool.close()


def test_an_interrupted_batch_leaves_the_pool_consistent():
    class Interrupt(Exception):
        pass

    def on_alarm(signum, frame):
        raise Interrupt

    pool = VerifierPool(1)
    old = signal.signal(signal.SIGALRM, on_alarm)
    try:
        pool.score([(r"\boxed{1}", r"\boxed{1}")], 5.0)
        signal.setitimer(signal.ITIMER_REAL, 0.3)  # like Ctrl-C in the middle of a batch
        with pytest.raises(Interrupt):
            pool.score([(r"\boxed{9^{99999999}}", r"\boxed{3}")], 30.0)
        # The stuck worker was replaced: its late answer cannot be read as this batch's.
        out = pool.score([(r"\boxed{2}", r"\boxed{3}"), (r"\boxed{3}", r"\boxed{3}")], 5.0)
        assert out.statuses == ["ok", "ok"] and out.scores == [0.0, 1.0]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        pool.close()


def test_a_batch_of_stuck_items_is_cut_at_the_batch_deadline(monkeypatch):
    """Eight items that each burn a whole deadline would cost 4 deadlines on 2 workers; the
    batch deadline stops them all at once (status batch_timeout) and the pool works after."""
    monkeypatch.setattr(_reward_worker, "SOFT_FRACTION", 50.0)
    pool = VerifierPool(2)
    try:
        pool.score([(r"\boxed{1}", r"\boxed{1}")] * 2, 5.0)
        items = [(r"\boxed{9^{99999999}}", r"\boxed{3}")] * 8 + [(r"\boxed{3}", r"\boxed{3}")]
        t0 = time.monotonic()
        out = pool.score(items, 2.0, batch_timeout_s=1.0)
        wall = time.monotonic() - t0
        assert wall < 1.0 + MARGIN_S, wall
        assert out.statuses == ["batch_timeout"] * 9 and out.scores == [0.0] * 9
        again = pool.score([(r"\boxed{2}", r"\boxed{3}"), (r"\boxed{3}", r"\boxed{3}")], 5.0)
        assert again.statuses == ["ok", "ok"] and again.scores == [0.0, 1.0]
    finally:
        pool.close()


def test_the_math_reward_gives_each_batch_its_budget(monkeypatch):
    from llm.rewards import registry

    assert registry.batch_timeout(64, 5.0, 2, 0.25) == 5.0 + 8.0  # not 64 / 2 · 5 s
    seen = []
    real = VerifierPool.score

    def spy(self, items, timeout_s, batch_timeout_s=None):
        seen.append((len(items), timeout_s, batch_timeout_s))
        return real(self, items, timeout_s, batch_timeout_s)

    monkeypatch.setattr(VerifierPool, "score", spy)
    reward = get_reward("math", timeout_s=3.0, num_workers=2, item_budget_s=0.5)
    assert reward([r"\boxed{3}"] * 4, ["3"] * 4) == [1.0] * 4
    assert seen == [(4, 3.0, 3.0 + 4 * 0.5 / 2)]
    with pytest.raises(ValueError, match="item_budget_s must be a positive number"):
        get_reward("math", item_budget_s=float("nan"))


def test_gold_answers_are_capped_like_completions():
    """A 2 MB or power-tower ground truth never reaches a worker (it would cost a deadline on
    every item of its group); it scores 0, counted as gold_rejected."""
    reward = get_reward("math", timeout_s=TIMEOUT_S, num_workers=2)
    golds = ["1" * 2_000_000, r"9^{9^{9^{9}}}", "{" * 5000 + "1" + "}" * 5000, "3"]
    t0 = time.monotonic()
    scores = reward([r"\boxed{3}"] * 4, golds)
    assert time.monotonic() - t0 < TIMEOUT_S
    assert scores == [0.0, 0.0, 0.0, 1.0]
    assert reward.stats.counts["gold_rejected"] == 3
    assert max(reward.stats.last_seconds[:3]) == 0.0  # decided in-process


def test_workers_die_with_their_parent(tmp_path):
    """SIGKILL the process that owns the pool while a worker is stuck in C code: the kernel
    kills the worker too (PR_SET_PDEATHSIG), instead of it running on for 0.8 × timeout."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    script = (
        "import sys, threading, llm.rewards.math_worker as m\n"
        "m.SOFT_FRACTION = 50.0\n"
        "pool = m.VerifierPool(1)\n"
        "pool.score([(r'\\boxed{1}', r'\\boxed{1}')], 60.0)\n"
        "print(pool._workers[0].proc.pid, pool._spare.proc.pid, flush=True)\n"
        "pool.score([(r'\\boxed{9^{99999999}}', r'\\boxed{3}')], 600.0)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=root, stdout=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(root)})  # fmt: skip
    pids: list[int] = []
    try:
        pids = [int(x) for x in parent.stdout.readline().split()]
        assert len(pids) == 2
        time.sleep(0.5)  # the worker is now inside the big-integer power
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 5.0
        alive = pids
        while alive and time.monotonic() < deadline:
            alive = [p for p in pids if _alive(p)]
            time.sleep(0.05)
        assert alive == [], f"workers {alive} outlived their parent"
    finally:
        if parent.poll() is None:
            parent.kill()
        for pid in pids:  # when the test fails, do not leave a stuck worker behind
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
