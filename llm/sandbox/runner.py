"""Run one program once, under limits, and say what happened.

`run_program(source, stdin, limits, backend, slot)` writes the program and its stdin into a
fresh private directory, starts `prlimit <limits> -- <backend command>` in a new session
(its own process group) with the scrubbed environment and no inherited descriptors beyond
stdin/stdout/stderr (and bwrap's status pipe), waits at most `limits.time_s` seconds, kills the
whole group (and with it bwrap's PID namespace) when the time is up, kills whatever still runs
under the slot's uid, reads the outputs and removes the directory.

stdin is a file and stdout/stderr are files in a directory the program cannot see (bwrap), so no
pipe can fill up and block either side, and RLIMIT_FSIZE bounds the output.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass

from llm.sandbox.backend import (
    CLEAN_ENV,
    Backend,
    SandboxUnavailable,
    find_backend,
    new_run_dir,
    slot_uid,
)
from llm.sandbox.limits import Limits

#: Outcomes of one run.
RUN_STATUSES = ("ok", "error", "timeout", "memory", "output_limit", "sandbox_error")
#: Bytes of stderr kept (the end of it: where a traceback's last line is).
STDERR_TAIL = 4096
#: Held while slots (and so their uids) are in use: by a pool's batch, by a backend's self-test.
SLOTS_LOCK = threading.RLock()


@dataclass(frozen=True)
class RunResult:
    """One run: `status` in RUN_STATUSES, exit code (None when killed by us or never started),
    the signal that ended it (None if it exited), stdout (at most `limits.output_bytes`),
    the last STDERR_TAIL bytes of stderr, wall seconds."""

    status: str
    exit_code: int | None
    signal: int | None
    stdout: bytes
    stderr: bytes
    seconds: float


def _proc_uid(pid: str) -> int | None:
    """Real uid of a live process; None for zombies (already dead) and vanished pids."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"State:") and line.split()[1] == b"Z":
                    return None
                if line.startswith(b"Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def pids_of_uid(uid: int) -> list[int]:
    """Live (non-zombie) processes, by /proc, whose real uid is `uid`."""
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and _proc_uid(p) == uid]


def reap_uid(uid: int, rounds: int = 200) -> int:
    """SIGKILL every process whose real uid is `uid` until none is left (a fork bomb keeps
    forking while we scan, hence the rounds). Returns how many were killed.

    Only ever called with a pool slot's private uid (`slot_uid`), which nothing else uses.
    """
    if uid < (1 << 30):
        raise ValueError(f"refusing to reap uid {uid}: not a sandbox slot uid")
    killed = 0
    for _ in range(rounds):
        pids = pids_of_uid(uid)
        if not pids:
            return killed
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        time.sleep(0.005)
    raise RuntimeError(f"processes of sandbox uid {uid} still alive after {rounds} rounds")


def _read_head(path, n: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _read_tail(path, n: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - n))
        return f.read()


def _bwrap_exit(status_text: str) -> int | None:
    """bwrap's `--json-status-fd` record of the child's exit code (None: never ran to the end)."""
    for line in status_text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "exit-code" in record:
            return int(record["exit-code"])
    return None


def classify(
    *,
    timed_out: bool,
    exit_code: int | None,
    sig: int | None,
    stdout_size: int,
    stderr: bytes,
    limits: Limits,
) -> str:
    """The RUN_STATUSES entry of a finished run (pure; order matters: the first match wins)."""
    if timed_out or sig == signal.SIGXCPU:
        return "timeout"
    if exit_code is None and sig is None:
        return "sandbox_error"
    if stdout_size >= limits.output_bytes:
        return "output_limit"
    if exit_code == 0:
        return "ok"
    last = stderr.rstrip().rsplit(b"\n", 1)[-1]
    if last.startswith(b"MemoryError"):
        return "memory"
    return "error"


def run_program(
    source: str, stdin: bytes, limits: Limits, backend: Backend, *, slot: int = 0
) -> RunResult:
    """Run the Python program `source` with `stdin` in `backend` under `limits` (see module)."""
    run_dir = new_run_dir()
    status_r = None
    try:
        program = run_dir / "main.py"
        program.write_bytes(source.encode("utf-8", "surrogatepass"))
        program.chmod(0o644)
        (run_dir / "stdin").write_bytes(stdin)
        sandboxed = backend.name == "bwrap"
        uid = slot_uid(slot) if sandboxed and os.geteuid() == 0 else None
        cmd = [*limits.prlimit_args(), *backend.command(str(program), uid, limits)]
        pass_fds: tuple[int, ...] = ()
        if sandboxed:
            status_r, status_w = os.pipe()
            cmd[cmd.index("--json-status-fd") + 1] = str(status_w)
            pass_fds = (status_w,)
        with (
            open(run_dir / "stdin", "rb") as fin,
            open(run_dir / "stdout", "wb") as fout,
            open(run_dir / "stderr", "wb") as ferr,
        ):
            t0 = time.monotonic()
            proc = subprocess.Popen(
                cmd, stdin=fin, stdout=fout, stderr=ferr, env=dict(CLEAN_ENV),
                cwd=run_dir, close_fds=True, pass_fds=pass_fds, start_new_session=True,
            )  # fmt: skip
            if sandboxed:
                os.close(status_w)
            timed_out = False
            try:
                rc = proc.wait(timeout=limits.time_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc)
                rc = proc.wait()
            seconds = time.monotonic() - t0
        if uid is not None:
            reap_uid(uid)
        else:
            _kill_group(proc)  # stragglers left in the group after the leader exited
        if sandboxed:
            exit_code = _bwrap_exit(_read_available(status_r))
            sig = exit_code - 128 if exit_code is not None and exit_code > 128 else None
        else:
            exit_code, sig = (rc, None) if rc >= 0 else (None, -rc)
        if timed_out:
            exit_code, sig = None, signal.SIGKILL
        stdout = _read_head(run_dir / "stdout", limits.output_bytes)
        stderr = _read_tail(run_dir / "stderr", STDERR_TAIL)
        size = os.path.getsize(run_dir / "stdout")
        status = classify(
            timed_out=timed_out, exit_code=exit_code, sig=sig, stdout_size=size, stderr=stderr,
            limits=limits,
        )  # fmt: skip
        return RunResult(status, exit_code, sig, stdout, stderr, seconds)
    finally:
        if status_r is not None:
            os.close(status_r)
        shutil.rmtree(run_dir, ignore_errors=True)


def _read_available(fd: int) -> str:
    """What is in the pipe now, without waiting for writers that might never close it."""
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


_CHECKED: dict[tuple[str, str | None], Backend] = {}


def get_backend(name: str = "bwrap", *, bwrap: str | None = None) -> Backend:
    """`find_backend(name)`, checked once per process by running a one-line program in it.
    Raises `SandboxUnavailable` naming the missing tool or the kernel's refusal and the fix."""
    key = (name, bwrap)
    if key not in _CHECKED:
        backend = find_backend(name, bwrap=bwrap)
        _probe(backend)
        _CHECKED[key] = backend
    return _CHECKED[key]


def _probe(backend: Backend) -> None:
    """Run `print(6 * 7)` in the backend; raise SandboxUnavailable with its stderr if it fails."""
    with SLOTS_LOCK:
        result = run_program("print(6 * 7)", b"", Limits(time_s=20.0), backend, slot=63)
    if result.status == "ok" and result.stdout.strip() == b"42":
        return
    detail = (result.stderr or result.stdout).decode("utf-8", "replace").strip()[-800:]
    hint = ""
    refused = ("namespace", "Operation not permitted", "uid map", "No permissions")
    if backend.name == "bwrap" and any(word in detail for word in refused):
        hint = (
            " bubblewrap could not create its namespaces: in a container, run it with "
            "--privileged or a seccomp profile that allows unshare/clone(CLONE_NEW*); on a "
            "host, enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1 "
            "on Debian, kernel.apparmor_restrict_unprivileged_userns=0 on Ubuntu 24.04) or run "
            "as root. For trusted code only, sandbox='unsandboxed' runs without isolation."
        )
    raise SandboxUnavailable(
        f"sandbox backend {backend.name!r} failed its self-test (status {result.status}, "
        f"exit {result.exit_code}): {detail or '(no output)'}.{hint}"
    )
