"""Resource limits of one sandboxed run, and the `prlimit` arguments that apply them.

The limits are set by util-linux `prlimit` on the process that then execs the sandbox, so they
are inherited by every process the program starts; no Python code runs between fork and exec
in the parent (no `preexec_fn`, which is unsafe in a threaded parent).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

_MB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What one run may use. The worst-case memory of a run is
    `max_processes * memory_mb + tmp_mb` MiB (address space is a per-process limit)."""

    time_s: float = 6.0
    """Wall-clock seconds, enforced from outside by killing the run's process group (and its
    PID namespace). CPU time is capped too, at `ceil(time_s)` seconds per process."""
    memory_mb: int = 1024
    """Address space per process (RLIMIT_AS), MiB; an allocation past it fails (MemoryError)."""
    output_bytes: int = 1 << 20
    """Largest file the program may write, stdout included (RLIMIT_FSIZE): stdout goes to a file
    the program cannot see, and a write past this fails with EFBIG."""
    max_files: int = 64
    """Open file descriptors per process (RLIMIT_NOFILE)."""
    max_processes: int = 4
    """Processes and threads of the run's user (RLIMIT_NPROC; enforced where the runner gives
    each slot its own uid, i.e. when the parent is root, or inside bwrap's user namespace)."""
    tmp_mb: int = 64
    """Size of the run's writable /tmp (a tmpfs inside the sandbox), MiB."""

    def __post_init__(self) -> None:
        if isinstance(self.time_s, bool) or not (
            isinstance(self.time_s, int | float) and 0 < self.time_s < math.inf
        ):
            raise ValueError(f"Limits.time_s must be a positive number, got {self.time_s!r}")
        for f in fields(self):
            if f.name == "time_s":
                continue
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Limits.{f.name} must be a positive integer, got {value!r}")
        if self.memory_mb < 64:
            raise ValueError(
                f"Limits.memory_mb must be >= 64 (the interpreter alone needs ~30 MiB of "
                f"address space), got {self.memory_mb}"
            )
        if self.max_files < 8:
            raise ValueError(f"Limits.max_files must be >= 8, got {self.max_files}")

    @property
    def cpu_s(self) -> int:
        """CPU seconds per process: SIGXCPU at this, SIGKILL one second later."""
        return max(1, math.ceil(self.time_s))

    def prlimit_args(self) -> list[str]:
        """`prlimit --cpu=S:H --as=... --fsize=... --nofile=... --core=0 --`: the limits set on
        the process that execs the sandbox, inherited by everything in it."""
        mem = self.memory_mb * _MB
        return [
            "prlimit",
            f"--cpu={self.cpu_s}:{self.cpu_s + 1}",
            f"--as={mem}:{mem}",
            f"--fsize={self.output_bytes}:{self.output_bytes}",
            f"--nofile={self.max_files}:{self.max_files}",
            "--core=0:0",
            "--",
        ]

    def nproc_args(self) -> list[str]:
        """`prlimit --nproc=N:N --`, run inside the sandbox just before the program: there the
        count is of the program's own uid (a slot uid, or the user inside bwrap's user
        namespace), not of the parent's processes."""
        return ["prlimit", f"--nproc={self.max_processes}:{self.max_processes}", "--"]
