"""The run's state: everything a training step reads and advances, opened fresh or resumed.

``open_run`` is the set-up, in the order that makes failures cheap (``llm.runstate.setup``): run
folder and config (rank 0), seeds, tokenizer and data, reward, model; then, for ``--resume``,
the latest complete checkpoint's weights and RNG streams before sharding and its optimiser and
scheduler after (``llm.parallel.checkpoint``). It is the same code for 1 or N processes: the
communicator decides what sharding and rank 0 mean.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llm.config.train_config import TrainConfig
from llm.data.stream import DataStream
from llm.parallel.checkpoint import Layout, load_full_checkpoint, model_layout
from llm.parallel.comm import Comm, on_main
from llm.parallel.fsdp import shard
from llm.rewards.registry import get_reward
from llm.runstate.checkpoint import latest_checkpoint, load_checkpoint
from llm.runstate.setup import (
    Data,
    load_data,
    load_model,
    make_optimizer,
    one_epoch_steps,
    prepare_run,
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

    def trainer_state(self) -> dict[str, int]:
        """What a checkpoint stores besides weights, optimiser and RNG (``trainer_state.json``)."""
        return {"step": self.step, "data_pos": self.stream.position,
                "skipped_steps": self.skipped_steps}  # fmt: skip


def _seed_everything(cfg: TrainConfig) -> None:
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)


def open_run(cfg: TrainConfig, run_dir: Path, *, resume: bool, comm: Comm) -> Run:
    """Set up (or, with ``resume``, restore) the run in ``run_dir`` on this process."""
    paths = on_main(comm, lambda: prepare_run(cfg, run_dir, resume=resume))
    _seed_everything(cfg)
    tokenizer, data = load_data(cfg, paths)  # bad rows fail here, before the model loads
    cfg = one_epoch_steps(cfg, len(data.train))  # total_steps=0: one epoch
    reward = get_reward(cfg.reward, timeout_s=cfg.reward_timeout_s)
    model, ref_model, _device = load_model(cfg, paths, device=comm.device)
    layout = model_layout(model)
    ckpt = latest_checkpoint(run_dir) if resume else None
    state = {"step": 0, "data_pos": 0, "skipped_steps": 0}
    if ckpt is not None:  # full weights and RNG streams into every rank's copy, then shard
        state = load_checkpoint(ckpt, model=model, optimizer=None)
    shard(comm, model)
    if ref_model is not None:
        shard(comm, ref_model)
    optimizer, scheduler = make_optimizer(cfg, model)  # after sharding: it holds the shards
    if ckpt is not None:
        load_full_checkpoint(ckpt, model=model, optimizer=optimizer, scheduler=scheduler,
                             layout=layout)  # fmt: skip
    pad_id = tokenizer.pad_token_id
    return Run(
        cfg=cfg, run_dir=run_dir, comm=comm, tokenizer=tokenizer, data=data,
        stream=DataStream(data.train, tokenizer, cfg, position=state["data_pos"]),
        reward=reward, model=model, ref_model=ref_model, optimizer=optimizer,
        scheduler=scheduler, layout=layout,
        pad_id=pad_id if pad_id is not None else tokenizer.eos_token_id,
        step=state["step"], skipped_steps=state["skipped_steps"],
    )  # fmt: skip
