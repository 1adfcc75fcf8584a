"""The run's state: everything a training step reads and advances, opened fresh or resumed.

``open_run`` is the set-up, in the order that makes failures cheap (``llm.runstate.setup``): run
folder lock, checks and config (rank 0, ``llm.runstate.run_folder``), seeds, tokenizer and data,
reward, model; then, for ``--resume``, the checkpoint rank 0 picked: its weights and RNG streams
before sharding and its optimiser and scheduler after (``llm.parallel.checkpoint``), the
config's ``lr`` into the restored optimiser, and only then the new config.yaml. It is the same
code for 1 or N processes: the communicator decides what sharding and rank 0 mean.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llm.config.resume import apply_lr, check_resume_length
from llm.config.train_config import TrainConfig
from llm.data.stream import DataStream
from llm.parallel.checkpoint import Layout, load_full_checkpoint, model_layout
from llm.parallel.comm import Comm, on_main
from llm.parallel.fsdp import shard
from llm.rewards.registry import get_reward
from llm.runstate.checkpoint import load_checkpoint
from llm.runstate.run_folder import RunFolderError, RunLock
from llm.runstate.setup import (
    Data,
    RunPaths,
    load_data,
    load_model,
    make_optimizer,
    one_epoch_steps,
    prepare_run,
    save_run_config,
)


@dataclass
class Run:
    """One training run between two steps."""

    cfg: TrainConfig
    run_dir: Path
    comm: Comm  # this process's place among 1 or W
    tokenizer: Any
    data: Data  # train and eval examples, rows skipped while loading
    stream: DataStream  # the prompt stream; its position is saved in checkpoints
    reward: Callable[[list[str], list[str]], list[float]]
    model: torch.nn.Module  # the policy (sharded when W > 1)
    ref_model: torch.nn.Module | None  # frozen reference, only when beta > 0
    optimizer: torch.optim.Optimizer
    scheduler: Any
    layout: Layout  # trainable parameter names in optimiser order, recorded before sharding
    pad_id: int
    step: int = 0  # the last completed step
    skipped_steps: int = 0  # inner steps skipped as non-finite, over the whole run
    consecutive_skips: int = 0  # skipped inner steps since the last applied one
    resumed: bool = False  # continued from a checkpoint (False for a fresh run or a start-over)
    lock: RunLock | None = None  # the run folder's lock, held by rank 0 until ``close``

    def trainer_state(self) -> dict[str, int]:
        """What a checkpoint stores besides weights, optimiser and RNG (``trainer_state.json``)."""
        return {"step": self.step, "data_pos": self.stream.position,
                "skipped_steps": self.skipped_steps,
                "consecutive_skips": self.consecutive_skips}  # fmt: skip

    def close(self) -> None:
        """Release the run folder (the kernel does it too if the process dies)."""
        if self.lock is not None:
            self.lock.release()


def _seed_everything(cfg: TrainConfig) -> None:
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)


def _open_folder(
    cfg: TrainConfig, run_dir: Path, resume: bool, overwrite: bool, start_over: bool, held: list
) -> RunPaths:
    """Rank 0: lock the run folder, then check it and set it up (``prepare_run``)."""
    if resume and not run_dir.is_dir():
        raise RunFolderError(f"--resume: {run_dir} does not exist (nothing to continue)")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        held.append(RunLock(run_dir))
    except OSError as e:  # read-only filesystem, no permission (os.access says yes to root)
        raise RunFolderError(f"--out {run_dir}: cannot write there ({e.strerror or e})") from None
    return prepare_run(cfg, run_dir, resume=resume, overwrite=overwrite, start_over=start_over)


def open_run(
    cfg: TrainConfig,
    run_dir: Path,
    *,
    resume: bool,
    comm: Comm,
    overwrite: bool = False,
    start_over: bool = False,
) -> Run:
    """Set up (or, with ``resume``, restore) the run in ``run_dir`` on this process.

    ``overwrite`` / ``start_over``: see ``llm.runstate.setup.prepare_run``. The returned run
    holds the folder's lock on rank 0: call ``Run.close`` when done."""
    held: list[RunLock] = []
    try:
        return _restore(cfg, run_dir, comm, held, resume, overwrite, start_over)
    except BaseException:
        for lock in held:
            lock.release()
        raise


def _restore(cfg, run_dir, comm, held, resume, overwrite, start_over) -> Run:
    paths = on_main(comm, lambda: _open_folder(cfg, run_dir, resume, overwrite, start_over, held))
    _seed_everything(cfg)
    tokenizer, data = load_data(cfg, paths)  # bad rows fail here, before the model loads
    given, cfg = cfg, one_epoch_steps(cfg, len(data.train))  # total_steps=0: one epoch
    reward = get_reward(cfg.reward, timeout_s=cfg.reward_timeout_s)
    model, ref_model, _device = load_model(cfg, paths, device=comm.device)
    layout = model_layout(model)
    ckpt = paths.checkpoint  # verified by rank 0 (``find_resume_point``)
    state = {"step": 0, "data_pos": 0, "skipped_steps": 0}
    if ckpt is not None:  # full weights and RNG streams into every rank's copy, then shard
        state = load_checkpoint(ckpt, model=model, optimizer=None, hashes=False)
        check_resume_length(cfg.total_steps, state["step"])
    shard(comm, model)
    if ref_model is not None:
        shard(comm, ref_model)
    optimizer, scheduler = make_optimizer(cfg, model)  # after sharding: it holds the shards
    if ckpt is not None:
        load_full_checkpoint(ckpt, model=model, optimizer=optimizer, scheduler=scheduler,
                             layout=layout)  # fmt: skip
        apply_lr(optimizer, scheduler, cfg.lr)  # lr may change on resume: it takes effect
        if comm.is_main:  # the resume is valid: config.yaml now describes the continued run
            save_run_config(given, run_dir)
    pad_id = tokenizer.pad_token_id
    return Run(
        cfg=cfg, run_dir=run_dir, comm=comm, tokenizer=tokenizer, data=data,
        stream=DataStream(data.train, tokenizer, cfg, position=state["data_pos"]),
        reward=reward, model=model, ref_model=ref_model, optimizer=optimizer,
        scheduler=scheduler, layout=layout,
        pad_id=pad_id if pad_id is not None else tokenizer.eos_token_id,
        step=state["step"], skipped_steps=state["skipped_steps"],
        consecutive_skips=state.get("consecutive_skips", 0), resumed=ckpt is not None,
        lock=held[0] if held else None,
    )  # fmt: skip
