"""Running untrusted Python programs: the security boundary of the code reward.

`SandboxPool(workers).run([Job(source, stdin), ...], Limits(time_s=...))` runs each program in
bubblewrap (new PID/network/IPC/UTS/mount namespaces; only /usr and the interpreter visible,
read-only; a size-capped tmpfs as the only writable place), under rlimits on CPU, address space,
file size, open files and processes, in its own process group, with a scrubbed environment and
no inherited descriptors, killed from outside at its wall-clock limit, and returns one
`RunResult` per job. `llm.sandbox.judge` turns completions and LiveCodeBench-shaped tests into
jobs and verdicts (the "code" reward, `llm/rewards/code.py`, is built on it). What is
guaranteed, and which test checks each guarantee: docs/SANDBOX.md.
"""

from llm.sandbox.backend import BACKENDS, SandboxUnavailable
from llm.sandbox.limits import Limits
from llm.sandbox.pool import SKIPPED, Job, SandboxPool, default_workers
from llm.sandbox.runner import RUN_STATUSES, RunResult, get_backend, run_program

__all__ = [
    "BACKENDS",
    "RUN_STATUSES",
    "SKIPPED",
    "Job",
    "Limits",
    "RunResult",
    "SandboxPool",
    "SandboxUnavailable",
    "default_workers",
    "get_backend",
    "run_program",
]
