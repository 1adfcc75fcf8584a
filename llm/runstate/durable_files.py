"""Durable file operations of ``llm.runstate.checkpoint``: fsync'd writes, hashing, safe deletion.

A file is durable once its bytes are fsync'd; a rename inside a folder is durable once the folder
is fsync'd (``_fsync_path`` does both). Deletion renames first, so a crash mid-delete never leaves
a half-deleted folder under a checkpoint's name. The manifest's hash is ``sha256`` of the file's
bytes, read in 4 MiB blocks.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path


def _fsync_path(path: Path) -> None:
    """fsync a file or a directory (a directory fsync makes renames inside it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_bytes_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _remove_tree(path: Path) -> None:
    """Delete a folder by first renaming it to `.trash-*`: a crash mid-delete leaves no
    half-deleted folder under a name that looks like a checkpoint."""
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)
