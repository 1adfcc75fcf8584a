"""Who may write a run folder, and whether a fresh run or a resume may start in it.

A run folder belongs to one run and one writer:

- ``RunLock``: the writer (rank 0 under torchrun) holds ``RUN/.lock`` with ``fcntl.flock`` for
  the run's whole life and writes its pid into it. The kernel drops the lock when the process
  ends, however it ends, so a crashed run never leaves the folder stuck; a second process on the
  same folder is refused with the owner's pid.
- ``check_fresh``: a fresh run refuses a folder that already holds anything (besides the lock
  file) unless told ``overwrite``, which deletes the earlier run's own files only.
- ``find_resume_point``: a resume needs a complete checkpoint. When none is usable, the resume
  is refused and nothing is touched, unless told ``start_over``, which moves the run's logs and
  checkpoints aside (``RUN/discarded-<time>/``) and starts again from step 1. Damaged
  checkpoints found on a resume that goes ahead are quarantined (moved, never deleted), so
  that no later save or pruning removes them.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sys
import time
from pathlib import Path

from llm.runstate.checkpoint import (
    CKPT_DIRNAME,
    _candidates,
    _step_dirs,
    checkpoint_root,
    quarantine,
)
from llm.runstate.checkpoint import verify_checkpoint as _verify

LOCK_NAME = ".lock"
#: What a run writes into its folder: removed by ``overwrite``, moved aside by ``start_over``.
RUN_FILES = ("config.yaml", "metrics.jsonl", "samples.jsonl", CKPT_DIRNAME, "tb")
#: Built for ``model=tiny`` / ``train_data=tiny`` / ``eval_data=tiny``: ``overwrite`` removes
#: the ones the new run builds again (never a data file the new run does not replace).
BUILT_FILES = ("tiny_model", "data/train.jsonl", "data/eval.jsonl")


class RunFolderError(RuntimeError):
    """A run folder that this run may not use as asked; the message says what to do instead."""


class RunLock:
    """An exclusive, crash-proof lock on a run folder (see the module docstring).

    Use as a context manager or call ``release``; raises ``RunFolderError`` when another live
    process holds it.
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            owner = _read_owner(self.path)
            raise RunFolderError(
                f"{self.path.parent} is in use by another training process (pid {owner}, lock "
                f"{self.path}): wait for it to finish or stop it, or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _read_owner(path: Path) -> str:
    try:
        return path.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def folder_contents(run_dir: Path) -> list[str]:
    """Names in ``run_dir`` other than the lock file (empty when it does not exist)."""
    if not run_dir.is_dir():
        return []
    return sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_NAME)


def check_fresh(run_dir: Path, *, overwrite: bool, rebuilt: tuple[str, ...] = ()) -> None:
    """Refuse a fresh run in a folder that holds anything, unless ``overwrite``: then delete
    the earlier run's outputs (``RUN_FILES``) and the built files the new run writes again
    (``rebuilt``, a subset of ``BUILT_FILES``), so none of them is reused; nothing else."""
    found = folder_contents(run_dir)
    if not found:
        return
    if not overwrite:
        shown = ", ".join(found[:6]) + (", …" if len(found) > 6 else "")
        hint = "--resume to continue it, " if (run_dir / "config.yaml").exists() else ""
        raise RunFolderError(
            f"{run_dir} is not empty ({shown}): pass {hint}--overwrite to replace its run, or "
            "choose a new --out folder"
        )
    import shutil

    for name in (*RUN_FILES, *(b for b in BUILT_FILES if b in rebuilt)):
        p = run_dir / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def find_resume_point(run_dir: Path, *, start_over: bool) -> Path | None:
    """The checkpoint a resume continues from, or None to start over (``start_over`` and none
    usable). Damaged checkpoints are quarantined (each new path printed to stderr) once a
    usable one is found; with none usable and no ``start_over``, ``RunFolderError`` and
    nothing is touched."""
    if not run_dir.is_dir():
        raise RunFolderError(f"--resume: {run_dir} does not exist (nothing to continue)")
    root = checkpoint_root(run_dir)
    # every step folder, also those newer than `latest` (an abandoned timeline), whose names a
    # later save would reuse: a damaged one among them must be moved away before that
    problems = {p: _verify(p) for _, p in sorted(_step_dirs(root), reverse=True)}
    found = next((c for c in _candidates(root) if not problems.get(c, ["gone"])), None)
    damaged = [(p, why) for p, why in problems.items() if why]
    if found is None and not start_over:
        detail = "; ".join(f"{p.name}: {'; '.join(pr)}" for p, pr in damaged) or "none saved"
        raise RunFolderError(
            f"--resume: {run_dir} has no usable checkpoint ({detail}); nothing was changed. "
            "Pass --start-over with --resume to begin this run again from step 1 (its logs "
            "and checkpoints are moved to a discarded-<time> folder inside it)"
        )
    if found is None:  # start over: the whole checkpoints folder goes aside, damaged ones too
        discard_run_files(run_dir)
        return None
    for path, why in damaged:
        moved = quarantine(path)
        print(f"ticgrpo train: damaged checkpoint {path.name} ({'; '.join(why)}) moved to {moved}",
              file=sys.stderr)  # fmt: skip
    return found


def discard_run_files(run_dir: Path) -> Path:
    """Move the run's logs, TensorBoard files and checkpoints into ``RUN/discarded-<time>/``
    (config.yaml and the built tiny model/data stay); return that folder."""
    dest = run_dir / f"discarded-{time.strftime('%Y%m%d-%H%M%S')}"
    n = 1
    while dest.exists():
        n += 1
        dest = run_dir / f"discarded-{time.strftime('%Y%m%d-%H%M%S')}.{n}"
    dest.mkdir()
    for name in RUN_FILES[1:]:
        if (run_dir / name).exists():
            os.replace(run_dir / name, dest / name)
    print(f"ticgrpo train: starting over; the earlier logs and checkpoints are in {dest}",
          file=sys.stderr)  # fmt: skip
    return dest
