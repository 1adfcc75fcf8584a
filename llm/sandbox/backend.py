"""How a program is started: inside bubblewrap (the default), or without isolation (opt-in).

`bwrap` (bubblewrap, the unprivileged sandbox behind Flatpak; Debian package `bubblewrap`) gives
each run new PID, network, IPC and UTS namespaces and a new mount namespace in which the only
things visible are `/usr` (read-only), the interpreter's prefix (read-only), a fresh `/proc`,
a minimal `/dev`, the program (read-only, `/sandbox/main.py`) and a size-capped tmpfs `/tmp`
(the working directory). The host's files, environment, processes and network do not exist in
there. When the parent is root, the program further runs under a uid of its own (one per pool
slot), with no capabilities, no new privileges, and no supplementary groups, via util-linux
`setpriv`; when it is not root, bwrap's user namespace does the same.

`unsandboxed` is for trusted code only and must be asked for by name: it keeps the limits, the
process group, the scrubbed environment and the fresh directory, but the program shares the
host's filesystem, network, process table and uid (so RLIMIT_NPROC does not bind a root
parent, and a daemon that leaves the process group survives); see docs/SANDBOX.md.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from llm.sandbox.limits import Limits

#: Interpreter flags: isolated mode (no PYTHON* variables, no user site), no site-packages,
#: no .pyc writes, UTF-8 I/O whatever the locale.
PYTHON_FLAGS = ("-I", "-S", "-B", "-X", "utf8")
#: The scrubbed environment every program starts with (nothing of the parent's).
CLEAN_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
#: Where the program lives inside the sandbox.
PROGRAM_PATH = "/sandbox/main.py"
BACKENDS = ("bwrap", "unsandboxed")

INSTALL_HINT = (
    "install bubblewrap: `sudo apt-get install bubblewrap` (Debian/Ubuntu), "
    "`sudo dnf install bubblewrap` (Fedora), `sudo pacman -S bubblewrap` (Arch)"
)


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot run here (tool missing, namespaces refused); the message says why and
    how to fix it."""


def slot_uid(slot: int, pid: int | None = None) -> int:
    """The uid of pool slot `slot` of process `pid` (default: this one): 2^30 + 64 pid + slot.

    Unique per live (process, slot), so that RLIMIT_NPROC counts one run's processes only and
    the reaper (`llm.sandbox.runner.reap_uid`) can never touch anything else.
    """
    if not 0 <= slot < 64:
        raise ValueError(f"slot must be in [0, 64), got {slot}")
    return (1 << 30) + 64 * (os.getpid() if pid is None else pid) + slot


def _mount_system(args: list[str]) -> None:
    """Read-only /usr, and /bin, /lib, ... as the symlinks or directories they are."""
    args += ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]


def _mount_interpreter(args: list[str], python: str) -> None:
    """The interpreter's installation prefix, read-only, at its own path (e.g. a pyenv or conda
    prefix outside /usr); parent directories are created world-traversable."""
    prefix = Path(sys.base_prefix).resolve()
    if not Path(python).resolve().is_relative_to(prefix):
        prefix = Path(python).resolve().parent.parent
    if prefix.is_relative_to("/usr") or str(prefix) == "/":
        return
    for parent in reversed(prefix.parents):
        if str(parent) != "/":
            args += ["--perms", "0755", "--dir", str(parent)]
    args += ["--ro-bind", str(prefix), str(prefix)]


@dataclass(frozen=True)
class Backend:
    """A way to start `python main.py`: `name` in BACKENDS, the interpreter, the bwrap path."""

    name: str
    python: str
    bwrap: str | None = None

    def command(self, program: str, uid: int | None, limits: Limits) -> list[str]:
        """argv (after `prlimit ... --`) that runs the file `program`; `uid` (bwrap only) is the
        uid the program runs as when the parent is root. RLIMIT_NPROC is set inside bwrap, where
        it counts the run's own processes; unsandboxed it is left alone (it would count the
        parent's uid: nothing for root, every process of the user otherwise)."""
        if self.name == "unsandboxed":
            return [self.python, *PYTHON_FLAGS, program]
        drop = []
        if uid is not None:
            drop = [
                "setpriv",
                f"--reuid={uid}",
                f"--regid={uid}",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--no-new-privs",
                "--",
            ]
        args = [self.bwrap, "--json-status-fd", "3"]
        args += ["--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
        args += ["--unshare-cgroup-try", "--die-with-parent", "--new-session", "--clearenv"]
        if os.geteuid() != 0:
            args += ["--unshare-user", "--disable-userns"]
        for key, value in CLEAN_ENV.items():
            args += ["--setenv", key, value]
        _mount_system(args)
        _mount_interpreter(args, self.python)
        args += ["--proc", "/proc", "--dev", "/dev"]
        args += ["--perms", "1777", "--size", str(limits.tmp_mb << 20), "--tmpfs", "/tmp"]
        args += ["--perms", "0755", "--dir", "/sandbox"]
        args += ["--ro-bind", program, PROGRAM_PATH, "--chdir", "/tmp"]
        return [*args, *limits.nproc_args(), *drop, self.python, *PYTHON_FLAGS, PROGRAM_PATH]


def _require_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SandboxUnavailable(
            f"`{name}` not found on PATH; it is part of {package} "
            f"(`sudo apt-get install {package}` on Debian/Ubuntu)"
        )
    return path


def find_backend(name: str = "bwrap", *, bwrap: str | None = None) -> Backend:
    """The backend `name` ("bwrap" or "unsandboxed") with its tools found, not yet run
    (`llm.sandbox.runner.get_backend` also runs its self-test). Raises `SandboxUnavailable`
    naming a missing tool and how to install it. `bwrap` overrides the executable."""
    if name not in BACKENDS:
        raise ValueError(f"unknown sandbox backend {name!r}; choose one of {BACKENDS}")
    _require_tool("prlimit", "util-linux")
    if os.geteuid() == 0:
        _require_tool("setpriv", "util-linux")
    path = None
    if name == "bwrap":
        path = bwrap or shutil.which("bwrap")
        if path is None or not os.access(path, os.X_OK):
            raise SandboxUnavailable(
                f"the code sandbox needs bubblewrap (`bwrap`), which is not installed; "
                f"{INSTALL_HINT}; or, for trusted code only, opt in to running without "
                "isolation (sandbox='unsandboxed')"
            )
    # The real binary: a venv's bin/python is a symlink to a path the sandbox does not mount.
    return Backend(name, os.path.realpath(sys.executable), path)


def new_run_dir() -> Path:
    """A fresh private directory for one run (mode 0700, removed by the runner afterwards)."""
    return Path(tempfile.mkdtemp(prefix="ticgrpo-sandbox-"))
