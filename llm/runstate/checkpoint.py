"""Crash-safe training checkpoints: weights, optimiser, RNG streams and trainer state.

Layout under a run folder::

    RUN/checkpoints/step-00000040/   model.safetensors, optimizer.pt, [scheduler.pt], rng.pt,
                                     trainer_state.json, manifest.json (written last)
    RUN/checkpoints/latest           one line: the name of the newest published checkpoint

A save never modifies a published checkpoint in place. It writes every file into a temporary
folder, fsyncs each file, writes `manifest.json` (size and sha256 of every other file) last,
fsyncs the folder, publishes it with one `os.replace` and only then moves the `latest` pointer
(itself written to a temporary file and `os.replace`d). A process killed at any instant therefore
leaves either the previous state or the new one, plus at worst a `.tmp-*` folder that the next
save deletes. Loading checks the manifest (presence, sizes, hashes) and, when given a run folder,
falls back with a warning from a partial or corrupt checkpoint to the previous complete one.

One writer per run folder is assumed (the trainer's rank 0). The fsync / hash / delete helpers
live in ``llm.runstate.durable_files``, the RNG snapshot (``rng_state``, ``set_rng_state``) in
``llm.runstate.rng``, ``CheckpointError`` / ``CheckpointWarning`` in ``llm.runstate.errors``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from llm.runstate.durable_files import _fsync_path, _remove_tree, _sha256, _write_bytes_durably
from llm.runstate.errors import CheckpointError, CheckpointWarning
from llm.runstate.rng import rng_state, set_rng_state

FORMAT_VERSION = 1
CKPT_DIRNAME = "checkpoints"
LATEST = "latest"
MANIFEST = "manifest.json"
#: Where damaged checkpoints are moved (never deleted) when a resume finds them.
QUARANTINE = "quarantine"
_STEP_RE = re.compile(r"^step-(\d+)$")


# ---------------------------------------------------------------------------------------------
# save


def checkpoint_root(run_dir: str | os.PathLike) -> Path:
    """The folder holding the step folders: `RUN/checkpoints`, or `run_dir` itself when it
    already is such a folder."""
    run_dir = Path(run_dir)
    if run_dir.name == CKPT_DIRNAME or (run_dir / LATEST).is_file():
        return run_dir
    return run_dir / CKPT_DIRNAME


def _write_payload(tmp: Path, step: int, model, blobs: dict[str, Any], state_json: str) -> None:
    """Every file of a checkpoint, each fsynced, then the manifest (sizes, sha256) last."""
    save_model(model, str(tmp / "model.safetensors"))
    _fsync_path(tmp / "model.safetensors")
    for name, obj in blobs.items():
        with open(tmp / name, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
    _write_bytes_durably(tmp / "trainer_state.json", state_json.encode())
    files = {
        p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in sorted(tmp.iterdir())
    }
    manifest = {"format": FORMAT_VERSION, "step": step, "files": files}
    _write_bytes_durably(tmp / MANIFEST, json.dumps(manifest, indent=1).encode())
    _fsync_path(tmp)


def _publish(tmp: Path, final: Path) -> None:
    """Rename the finished folder into place, then move the `latest` pointer to it; each
    rename is one atomic `os.replace` made durable by an fsync of the parent folder."""
    root = final.parent
    if final.exists():  # re-saving a step (e.g. after a resume): never rename onto a full dir
        _remove_tree(final)
    os.replace(tmp, final)
    _fsync_path(root)
    pointer = root / LATEST
    if pointer.exists() and not pointer.is_file():  # e.g. a user's folder named "latest"
        aside = root / f"{LATEST}.moved-aside-{os.getpid()}-{time.strftime('%Y%m%d-%H%M%S')}"
        os.replace(pointer, aside)
        warnings.warn(
            f"{pointer} was not a pointer file; moved it to {aside}",
            CheckpointWarning,
            stacklevel=3,
        )
    _write_bytes_durably(root / f"{LATEST}.tmp", f"{final.name}\n".encode())
    os.replace(root / f"{LATEST}.tmp", root / LATEST)
    _fsync_path(root)


def save_checkpoint(
    run_dir: str | os.PathLike,
    step: int,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    trainer_state: dict,
    keep: int = 2,
    scheduler: Any = None,
    generators: Mapping[str, torch.Generator] | None = None,
) -> Path:
    """Write checkpoint `step` atomically, point `latest` at it and keep the newest `keep`.

    `trainer_state` must be JSON-serialisable (step, data position, counters...); it is
    returned unchanged by `load_checkpoint`. `scheduler` is anything with `state_dict()`.
    Returns the published folder `RUN/checkpoints/step-XXXXXXXX`.
    """
    if not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be a non-negative int, got {step!r}")
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    try:
        state_json = json.dumps({"step": step, "trainer_state": trainer_state}, indent=1)
    except (TypeError, ValueError) as e:
        raise TypeError(f"trainer_state must be JSON-serialisable: {e}") from e

    root = checkpoint_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-*"):  # left by a save that was killed
        shutil.rmtree(stale, ignore_errors=True)
    for stale in root.glob(".trash-*"):
        shutil.rmtree(stale, ignore_errors=True)

    blobs: dict[str, Any] = {"rng.pt": rng_state(generators)}
    if optimizer is not None:
        blobs["optimizer.pt"] = optimizer.state_dict()
    if scheduler is not None:
        blobs["scheduler.pt"] = scheduler.state_dict()
    tmp = root / f".tmp-step-{step:08d}-{os.getpid()}"
    tmp.mkdir()
    _write_payload(tmp, step, model, blobs, state_json)
    final = root / f"step-{step:08d}"
    _publish(tmp, final)

    older = sorted((s, p) for s, p in _step_dirs(root) if s < step)
    for _, path in older[: max(0, len(older) - (keep - 1))]:
        _remove_tree(path)
    return final


# ---------------------------------------------------------------------------------------------
# validate and load


def _step_dirs(root: Path) -> list[tuple[int, Path]]:
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = _STEP_RE.match(p.name)
        if m and p.is_dir():
            out.append((int(m.group(1)), p))
    return out


def verify_checkpoint(path: str | os.PathLike, *, hashes: bool = True) -> list[str]:
    """Problems that make the checkpoint folder unusable ([] means complete): a missing or
    unreadable manifest, a listed file missing or of the wrong size, or (with `hashes`) a
    sha256 mismatch."""
    path = Path(path)
    if not path.is_dir():
        return [f"{path}: not a directory"]
    try:
        manifest = json.loads((path / MANIFEST).read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return [f"{path / MANIFEST}: missing (the save did not finish)"]
    except (OSError, ValueError) as e:
        return [f"{path / MANIFEST}: unreadable ({type(e).__name__}: {e})"]
    shape = _manifest_shape_problem(manifest)
    if shape:
        return [f"{path / MANIFEST}: {shape}"]
    problems = []
    for name, info in manifest["files"].items():
        f = path / name
        if not f.is_file():
            problems.append(f"{f}: listed in the manifest but missing")
        elif f.stat().st_size != info["bytes"]:
            problems.append(f"{f}: {f.stat().st_size} bytes, manifest says {info['bytes']}")
        elif hashes and _sha256(f) != info["sha256"]:
            problems.append(f"{f}: sha256 differs from the manifest (corrupt)")
    return problems


def _manifest_shape_problem(manifest: object) -> str | None:
    """What is wrong with the shape of a parsed manifest (None when it is usable): an object
    with an integer ``step`` and ``files`` mapping safe file names to ``{bytes: int, sha256:
    str}``, listing at least the weights and the trainer state."""
    if not isinstance(manifest, dict):
        return f"expected a JSON object, got {type(manifest).__name__}"
    step, files = manifest.get("step"), manifest.get("files")
    if not isinstance(step, int) or isinstance(step, bool):
        return f"'step' must be an integer, got {step!r:.40}"
    if not isinstance(files, dict):
        return f"'files' must be an object of name -> {{bytes, sha256}}, got {type(files).__name__}"
    for name in ("model.safetensors", "trainer_state.json"):
        if name not in files:
            return f"'files' does not list {name}"
    for name, info in files.items():
        if not isinstance(name, str) or "/" in name or name in ("", ".", ".."):
            return f"'files' holds an unsafe name {name!r:.40}"
        if not isinstance(info, dict):
            return f"'files'.{name} must be an object, got {type(info).__name__}"
        size, digest = info.get("bytes"), info.get("sha256")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            return f"'files'.{name}.bytes must be a non-negative integer, got {size!r:.40}"
        if not isinstance(digest, str):
            return f"'files'.{name}.sha256 must be a string, got {digest!r:.40}"
    return None


def _candidates(root: Path) -> list[Path]:
    """Checkpoints to try, best first: the one `latest` names, then older ones by step. Folders
    newer than `latest` belong to an abandoned timeline (a resume from an earlier step)."""
    dirs = sorted(_step_dirs(root), reverse=True)
    pointer = root / LATEST
    if pointer.is_file():
        m = _STEP_RE.match(pointer.read_bytes().decode("utf-8", "replace").strip())
        if m:
            cut = int(m.group(1))
            head = [p for s, p in dirs if s == cut]
            return head + [p for s, p in dirs if s < cut]
        warnings.warn(
            f"{pointer}: unreadable pointer; trying checkpoints by step",
            CheckpointWarning,
            stacklevel=3,
        )
    return [p for _, p in dirs]


def _resolve(path: str | os.PathLike, hashes: bool) -> Path | None:
    """The checkpoint folder to load for `path` (a checkpoint, a run or a checkpoints folder)."""
    path = Path(path)
    if _STEP_RE.match(path.name) or (path / MANIFEST).exists():
        problems = verify_checkpoint(path, hashes=hashes)
        if problems:
            raise CheckpointError(
                f"checkpoint {path} is incomplete or corrupt: " + "; ".join(problems)
            )
        return path
    candidates = _candidates(checkpoint_root(path))
    for k, cand in enumerate(candidates):
        problems = verify_checkpoint(cand, hashes=hashes)
        if not problems:
            return cand
        then = "trying an older one" if k + 1 < len(candidates) else "no older checkpoint left"
        warnings.warn(
            f"skipping checkpoint {cand}: " + "; ".join(problems) + f"; {then}",
            CheckpointWarning,
            stacklevel=3,
        )
    return None


def quarantine(path: str | os.PathLike) -> Path:
    """Move a damaged checkpoint folder aside, out of the step folders that are loaded, pruned
    or re-saved, into ``RUN/checkpoints/quarantine/``; return its new path. Nothing is deleted:
    what to do with it is the user's call."""
    path = Path(path)
    target_dir = path.parent / QUARANTINE
    target_dir.mkdir(exist_ok=True)
    target = target_dir / path.name
    n = 1
    while target.exists():
        n += 1
        target = target_dir / f"{path.name}.{n}"
    os.replace(path, target)
    _fsync_path(path.parent)
    return target


def latest_checkpoint(run_dir: str | os.PathLike, *, hashes: bool = True) -> Path | None:
    """The newest complete checkpoint of a run (what `load_checkpoint(run_dir)` would load),
    or None when there is none."""
    return _resolve(run_dir, hashes)


def load_checkpoint(
    path_or_run_dir: str | os.PathLike,
    *,
    model: torch.nn.Module | None,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any = None,
    generators: Mapping[str, torch.Generator] | None = None,
    restore_rng: bool = True,
    hashes: bool = True,
) -> dict:
    """Restore model weights, optimiser (and scheduler) state and RNG streams in place; return
    the saved `trainer_state`.

    `path_or_run_dir` is a checkpoint folder (must be complete, else `CheckpointError`) or a run
    folder (resolved through `latest`, falling back with a `CheckpointWarning` to the previous
    complete checkpoint). Pass `model` only (optimizer=None, restore_rng=False) to read weights
    for evaluation.
    """
    ckpt = _resolve(path_or_run_dir, hashes)
    if ckpt is None:
        raise CheckpointError(f"no complete checkpoint found under {path_or_run_dir}")
    if model is not None:
        try:
            load_model(model, ckpt / "model.safetensors", strict=True)
        except RuntimeError as e:
            raise CheckpointError(
                f"{ckpt / 'model.safetensors'} does not fit the model: {e}"
            ) from e
    for obj, name in ((optimizer, "optimizer.pt"), (scheduler, "scheduler.pt")):
        if obj is None:
            continue
        if not (ckpt / name).is_file():
            raise CheckpointError(f"{ckpt / name}: missing (the checkpoint was saved without it)")
        obj.load_state_dict(torch.load(ckpt / name, map_location="cpu", weights_only=True))
    if restore_rng:
        set_rng_state(
            torch.load(ckpt / "rng.pt", map_location="cpu", weights_only=True), generators
        )
    return json.loads((ckpt / "trainer_state.json").read_text())["trainer_state"]
