"""Many (program, stdin) jobs on the machine's cores, each job under its own limits.

`SandboxPool(workers).run(jobs, limits)` runs `jobs` on `workers` threads, each thread owning
one slot (its own uid when the parent is root). A thread only waits on its subprocess, so a job
that stalls holds one slot for at most `limits.time_s` (plus the kill) and never delays the
others beyond that.

Jobs sharing a `group` (e.g. the tests of one completion) run one at a time, in order, while
other groups use the other slots; after a job whose result `keep_going(job_index, result)`
rejects, the rest of its group is not run (status "skipped"). So a program that stalls on every
test holds one slot for one time limit, not one slot per test.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

from llm.sandbox.backend import SandboxUnavailable
from llm.sandbox.limits import Limits
from llm.sandbox.runner import SLOTS_LOCK, RunResult, get_backend, run_program

#: The result given to a job whose group was stopped before it started.
SKIPPED = RunResult("skipped", None, None, b"", b"", 0.0)


@dataclass(frozen=True)
class Job:
    """One run: Python `source`, bytes on `stdin`, and an optional `group` key for cut-short."""

    source: str
    stdin: bytes = b""
    group: Hashable | None = None


def default_workers() -> int:
    """One slot per CPU core this process may use (at most 63)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(63, cores))


class SandboxPool:
    """Runs jobs in `backend` ("bwrap", or "unsandboxed" only with `allow_unsandboxed=True`).

    Construction checks the backend (`SandboxUnavailable` with the reason and the fix when it
    cannot run here), so a misconfigured machine fails before training starts.
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        backend: str = "bwrap",
        allow_unsandboxed: bool = False,
        bwrap: str | None = None,
    ) -> None:
        if backend == "unsandboxed" and not allow_unsandboxed:
            raise SandboxUnavailable(
                "refusing to run untrusted code without a sandbox: backend 'unsandboxed' needs "
                "allow_unsandboxed=True (use it for trusted code only)"
            )
        workers = default_workers() if workers is None else workers
        if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 63:
            raise ValueError(f"workers must be an integer in [1, 63], got {workers!r}")
        self.workers = workers
        self.backend = get_backend(backend, bwrap=bwrap)

    def run(
        self,
        jobs: Sequence[Job],
        limits: Limits,
        *,
        keep_going: Callable[[int, RunResult], bool] | None = None,
    ) -> list[RunResult]:
        """Results in job order (see the module docstring for `keep_going` and groups).

        One batch at a time per process, whichever pool runs it: slot k's uid is the same in
        every pool of a process, and two batches at once would reap each other's runs."""
        with SLOTS_LOCK:
            return self._run(jobs, limits, keep_going)

    def _run(self, jobs, limits, keep_going) -> list[RunResult]:
        results: list[RunResult | None] = [None] * len(jobs)
        queue = deque(range(len(jobs)))
        busy: set = set()  # groups with a job running now
        stopped: set = set()  # groups cut short
        cond = threading.Condition()
        errors: list[BaseException] = []

        def next_job() -> int | None:
            """The first queued job whose group is idle (None: nothing left); under `cond`."""
            while True:
                if errors or not queue:
                    return None
                i = next(
                    (j for j in queue if jobs[j].group is None or jobs[j].group not in busy), None
                )
                if i is None:
                    cond.wait()
                    continue
                queue.remove(i)
                if jobs[i].group in stopped:
                    results[i] = SKIPPED
                    continue
                if jobs[i].group is not None:
                    busy.add(jobs[i].group)
                return i

        def work(slot: int) -> None:
            while True:
                with cond:
                    i = next_job()
                if i is None:
                    return
                group = jobs[i].group
                try:
                    result = run_program(
                        jobs[i].source, jobs[i].stdin, limits, self.backend, slot=slot
                    )
                except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                    with cond:
                        errors.append(exc)
                        cond.notify_all()
                    return
                with cond:
                    results[i] = result
                    if group is not None:
                        busy.discard(group)
                        if keep_going is not None and not keep_going(i, result):
                            stopped.add(group)
                    cond.notify_all()

        threads = [
            threading.Thread(target=work, args=(s,), daemon=True)
            for s in range(min(self.workers, len(jobs)))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return [r if r is not None else SKIPPED for r in results]
