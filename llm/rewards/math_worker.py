"""Sandboxed math-verify checks in worker processes with a hard per-item deadline.

Private helper of `llm.rewards.registry`. Why separate processes:

- math-verify's own timeout is `signal.alarm`, which only works on the main thread and cannot
  interrupt C code: `\\boxed{9^{9^{9^9}}}` spends minutes inside CPython's big-integer power and
  never returns to the interpreter. A killed process always stops, so the deadline is enforced
  from the parent with SIGKILL.
- A worker runs with a memory limit (`RLIMIT_AS`), ignores Ctrl-C, runs in its own session, and
  has sympy's string parser (`parse_expr`, which calls `eval`) wrapped so that it refuses
  anything but a single number or name: the LaTeX path only ever sends it number tokens, so
  model text can never reach `eval`. (math-verify's ExprExtractionConfig, which would hand raw
  text to `parse_expr`, is never used.)

Protocol: one JSON object per line. The worker prints `{"ready": true}` once its imports are
done, then answers each request `{"id", "pred", "gold", "soft_s"}` with `{"id", "score",
"status"}`, status in `ok | gold_unparsed | error | soft_timeout | memory`. The parent hands a
worker one item at a time and starts the item's clock when it sends it; a spare worker is kept
started so that a kill costs no import time.
"""

from __future__ import annotations

import json
import math
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

#: Seconds a fresh worker may take to import sympy and math-verify before we give up.
STARTUP_TIMEOUT_S = 120.0
#: Workers that may die before printing their ready line, in a row, before we give up.
MAX_FAILED_STARTS = 3
#: Fraction of the hard deadline after which the worker's own interval timer interrupts
#: pure-Python work (cheaper than a kill: the worker survives).
SOFT_FRACTION = 0.8


# ----------------------------------------------------------------------------- worker side


class _SoftTimeout(BaseException):
    """Raised by the interval timer; a BaseException so library `except Exception` can't eat it."""


#: The only strings sympy's `parse_expr` may still see in a worker: one number or one name.
#: latex2sympy feeds number tokens through `sympy.Number(text)` -> sympify -> parse_expr, and
#: unit names through `Symbol` lookups; neither can call anything.
_ATOM = re.compile(r"\s*[+-]?\s*(?:\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+|[A-Za-z][A-Za-z0-9_]*)\s*")


def _guarded(parse_expr):
    """Wrap sympy's `parse_expr` (which calls `eval`) so that only `_ATOM` strings get through."""

    def guarded_parse_expr(s, *args, **kwargs):
        if not isinstance(s, str) or len(s) > 400 or not _ATOM.fullmatch(s):
            raise ValueError("parse_expr is restricted to single atoms in the reward worker")
        return parse_expr(s, *args, **kwargs)

    return guarded_parse_expr


def _harden(memory_limit_mb: int) -> None:
    """Memory cap, no Ctrl-C, and no path from model text to `eval` in this process."""
    import logging
    import resource

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if memory_limit_mb > 0:
        cap = memory_limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    import latex2sympy2_extended.latex2sympy2 as l2s
    import math_verify.parser as mv_parser
    import sympy.parsing
    import sympy.parsing.sympy_parser as sympy_parser

    # sympify(str) imports parse_expr from sympy_parser at call time, so patching the module
    # attribute covers it; the other names are bindings made at import time.
    guarded = _guarded(sympy_parser.parse_expr)
    for module in (sympy_parser, sympy.parsing, mv_parser, l2s):
        module.parse_expr = guarded
    for name in ("math_verify", "latex2sympy2_extended", "sympy"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL this worker when its parent dies (even by SIGKILL), so a
    worker busy in C code never outlives the trainer. Linux only; a no-op elsewhere. If the
    parent is already gone (it died before this call), exit now."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the pipes still end the idle worker
        return
    if os.getppid() != parent_pid:
        os._exit(0)


def _serve(memory_limit_mb: int, parent_pid: int = 0) -> None:
    """Worker main loop: read requests on stdin, write answers on the saved stdout."""
    if parent_pid:
        _die_with_parent(parent_pid)
    # Library prints must not corrupt the protocol: keep the real stdout private, send fd 1 away.
    out = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        from functools import lru_cache

        from math_verify import LatexExtractionConfig, parse, verify

        _harden(memory_limit_mb)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent verbatim
        out.write(json.dumps({"fatal": f"{type(exc).__name__}: {exc}"}) + "\n")
        return
    # LaTeX only: ExprExtractionConfig goes through sympy's parse_expr (eval).
    config = [LatexExtractionConfig(boxed_match_priority=0)]

    @lru_cache(maxsize=4096)
    def parse_gold(gold: str):
        return parse(gold, extraction_config=config, parsing_timeout=None)

    def on_alarm(signum, frame):
        raise _SoftTimeout

    signal.signal(signal.SIGALRM, on_alarm)
    out.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        req = json.loads(line)
        status, score = "ok", 0.0
        signal.setitimer(signal.ITIMER_REAL, max(0.01, float(req["soft_s"])))
        try:
            gold = parse_gold(req["gold"])
            pred = parse(req["pred"], extraction_config=config, parsing_timeout=None)
            if not gold:
                status = "gold_unparsed"
            elif pred:
                score = float(bool(verify(gold, pred, timeout_seconds=None)))
        except _SoftTimeout:
            status = "soft_timeout"
        except MemoryError:
            status = "memory"
        except Exception:  # noqa: BLE001 - any library failure on hostile text scores 0
            status = "error"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        out.write(json.dumps({"id": req["id"], "score": score, "status": status}) + "\n")


# ----------------------------------------------------------------------------- parent side


class WorkerError(RuntimeError):
    """A worker could not start (missing library, broken environment)."""


class _Worker:
    """One worker subprocess; `ready` once it printed its ready line."""

    def __init__(self, memory_limit_mb: int) -> None:
        root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        cmd = [
            sys.executable,
            "-c",
            f"from llm.rewards.math_worker import _serve; _serve({memory_limit_mb}, {os.getpid()})",
        ]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # a Ctrl-C in the trainer's terminal is not delivered here
        )
        self.started = time.monotonic()
        self.ready = False

    def send(self, obj: dict) -> bool:
        try:
            self.proc.stdin.write((json.dumps(obj) + "\n").encode("ascii"))
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError):
            return False

    def recv(self) -> dict | None:
        """One reply line (called only when the pipe is readable), or None if the worker died."""
        line = self.proc.stdout.readline()
        if not line:
            return None
        try:
            return json.loads(line)
        except ValueError:
            return None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass


@dataclass
class BatchResult:
    """Per-item outcome of `VerifierPool.score`: scores in {0, 1}, status, seconds on a worker."""

    scores: list[float]
    statuses: list[str]
    seconds: list[float]
    restarts: int = 0
    counts: dict[str, int] = field(default_factory=dict)


class VerifierPool:
    """`num_workers` persistent worker processes plus one started spare.

    `score(items, timeout_s)` checks `(pred, gold)` pairs, one item per worker at a time. An item
    that has not answered `timeout_s` seconds after it was sent gets score 0 and status
    "timeout", and its worker is killed and replaced by the spare. A worker that dies mid-item
    (e.g. memory limit) gives status "crash" and is replaced likewise.
    """

    def __init__(self, num_workers: int = 2, *, memory_limit_mb: int = 4096) -> None:
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        self.num_workers = num_workers
        self.memory_limit_mb = memory_limit_mb
        self._workers: list[_Worker] = [_Worker(memory_limit_mb) for _ in range(num_workers)]
        self._spare: _Worker | None = _Worker(memory_limit_mb)
        self.total_restarts = 0
        self.owner_pid = os.getpid()  # a forked child must not share these pipes
        self._failed_starts = 0

    def _replace(self, worker: _Worker, out: BatchResult) -> None:
        """Kill `worker`; the spare takes its place and a new spare starts importing."""
        worker.kill()
        self.total_restarts += 1
        out.restarts += 1
        fresh = self._spare if self._spare is not None else _Worker(self.memory_limit_mb)
        self._spare = _Worker(self.memory_limit_mb)
        self._workers[self._workers.index(worker)] = fresh

    def _read_ready(self, worker: _Worker, out: BatchResult) -> None:
        """Mark a started worker ready; a broken environment raises, a killed spare is replaced."""
        msg = worker.recv()
        if msg is not None and "fatal" not in msg:
            worker.ready = True
            self._failed_starts = 0
            return
        self._failed_starts += 1
        if (msg is not None and "fatal" in msg) or self._failed_starts > MAX_FAILED_STARTS:
            reason = msg["fatal"] if msg else f"exited with code {worker.proc.poll()}"
            raise WorkerError(f"reward worker failed to start: {reason}")
        self._replace(worker, out)

    def score(
        self, items: list[tuple[str, str]], timeout_s: float, batch_timeout_s: float | None = None
    ) -> BatchResult:
        """Score `items` = [(pred_latex, gold_latex), ...]; every item returns within timeout_s
        and the whole batch within `batch_timeout_s` (None: no batch limit): when the batch's
        time is up, items still running or waiting score 0 with status "batch_timeout"."""
        n = len(items)
        out = BatchResult([0.0] * n, ["pending"] * n, [0.0] * n)
        queue = deque(range(n))
        busy: dict[_Worker, tuple[int, float]] = {}
        end = time.monotonic() + batch_timeout_s if batch_timeout_s is not None else math.inf
        try:
            self._run(items, timeout_s, out, queue, busy, end)
        except BaseException:
            # Interrupted (Ctrl-C, WorkerError): busy workers hold items nobody will collect,
            # and their late answers would be read as the next batch's. Replace them.
            for w in list(busy):
                self._replace(w, out)
            raise
        for status in out.statuses:
            out.counts[status] = out.counts.get(status, 0) + 1
        return out

    def _run(
        self, items, timeout_s: float, out: BatchResult, queue: deque, busy: dict, end: float
    ) -> None:
        """The scheduling loop of `score`: dispatch, wait for answers or deadlines, repeat;
        `end` is the batch's deadline (time.monotonic)."""
        n = len(items)
        soft_s = timeout_s * SOFT_FRACTION
        sends = [0] * n
        while queue or busy:
            if time.monotonic() >= end:
                self._end_batch(out, queue, busy)
                return
            for w in list(self._workers):
                if w.ready and w not in busy and queue:
                    i = queue.popleft()
                    busy[w] = (i, time.monotonic())
                    if not w.send(
                        {"id": i, "pred": items[i][0], "gold": items[i][1], "soft_s": soft_s}
                    ):  # the worker died while idle: the item never ran, so send it again
                        sends[i] += 1
                        if sends[i] <= MAX_FAILED_STARTS:
                            busy.pop(w)
                            queue.appendleft(i)
                        else:
                            self._finish(out, busy.pop(w), "crash")
                        self._replace(w, out)
            waiting = [w for w in self._workers if w in busy or not w.ready]
            deadlines = [t0 + timeout_s for _, t0 in busy.values()]
            deadlines += [w.started + STARTUP_TIMEOUT_S for w in waiting if not w.ready]
            deadlines += [end] if end < math.inf else []
            wait_s = max(0.0, min(deadlines) - time.monotonic()) if deadlines else 0.0
            with selectors.DefaultSelector() as sel:
                for w in waiting:
                    sel.register(w.proc.stdout, selectors.EVENT_READ, w)
                ready = [key.data for key, _ in sel.select(wait_s)]
            for w in ready:
                self._on_readable(w, busy, out)
            self._enforce_deadlines(busy, out, timeout_s)

    def _end_batch(self, out: BatchResult, queue: deque, busy: dict) -> None:
        """The batch's time is up: running items are stopped (their workers replaced), waiting
        ones are not started; all score 0 with status "batch_timeout"."""
        for w, item in list(busy.items()):
            busy.pop(w)
            self._finish(out, item, "batch_timeout")
            self._replace(w, out)
        now = time.monotonic()
        while queue:
            self._finish(out, (queue.popleft(), now), "batch_timeout")

    def _on_readable(self, w: _Worker, busy: dict, out: BatchResult) -> None:
        if not w.ready:
            self._read_ready(w, out)
            return
        msg = w.recv()
        i, t0 = busy.pop(w)
        if msg is None or msg.get("id") != i:
            self._finish(out, (i, t0), "crash")
            self._replace(w, out)
            return
        out.scores[i] = float(msg["score"])
        self._finish(out, (i, t0), str(msg["status"]))

    def _enforce_deadlines(self, busy: dict, out: BatchResult, timeout_s: float) -> None:
        now = time.monotonic()
        for w, (i, t0) in list(busy.items()):
            if now - t0 >= timeout_s:
                busy.pop(w)
                self._finish(out, (i, t0), "timeout")
                self._replace(w, out)
        for w in self._workers:
            if not w.ready and now - w.started > STARTUP_TIMEOUT_S:
                raise WorkerError(f"reward worker did not start within {STARTUP_TIMEOUT_S:.0f} s")

    @staticmethod
    def _finish(out: BatchResult, item: tuple[int, float], status: str) -> None:
        i, t0 = item
        out.statuses[i] = status
        out.seconds[i] = time.monotonic() - t0

    def close(self) -> None:
        for w in [*self._workers, *([self._spare] if self._spare else [])]:
            w.kill()
        self._workers, self._spare = [], None
