"""Checkpoints of a run of 1 or N processes, always in the single-process format.

A world of one saves and loads with ``llm.runstate.checkpoint`` directly. A sharded (FSDP2) run
saves exactly what one process would: every rank takes part in gathering the full model state
dict and the full optimiser state (``torch.distributed.checkpoint``, CPU offload), and rank 0
alone writes them with ``save_checkpoint``, so a run resumes in any number of processes,
including 1. The optimiser state is converted between the two key conventions with a ``Layout``
recorded before sharding: ``Optimizer.state_dict()`` numbers the trainable parameters
``0 … n-1`` in ``model.parameters()`` order, ``torch.distributed.checkpoint`` keys them by fully
qualified name; tied weights are one tensor under several names in the state dict. On resume
the weights load before sharding (``load_checkpoint`` with no optimiser) and the optimiser state
after it (``load_full_checkpoint``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from llm.parallel.fsdp import is_sharded
from llm.runstate.checkpoint import load_checkpoint, save_checkpoint

if TYPE_CHECKING:
    from llm.parallel.comm import Comm


@dataclass(frozen=True)
class Layout:
    """Names of the trainable parameters in optimiser order, and tied aliases (alias -> name)."""

    names: list[str]
    aliases: dict[str, str]


def model_layout(model: torch.nn.Module) -> Layout:
    """Recorded before sharding: ``named_parameters`` lists a tied weight once, under its
    first name; the state dict has every alias."""
    first: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            aliases[name] = first[id(p)]
        else:
            first[id(p)] = name
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    return Layout(names, aliases)


class _StateView(torch.nn.Module):
    """Hands a ready state dict to ``safetensors.torch.save_model`` (which only calls
    ``state_dict()``), so the file is byte-for-byte what a single process writes."""

    def __init__(self, state: dict[str, torch.Tensor]):
        super().__init__()
        self._state = state

    def state_dict(self, *args, **kwargs):  # noqa: ARG002 - the nn.Module signature
        return dict(self._state)


class _OptimizerView:
    def __init__(self, state: dict):
        self._state = state

    def state_dict(self) -> dict:
        return self._state


def _by_index(osd: dict, layout: Layout) -> dict:
    """FQN-keyed optimiser state (torch.distributed.checkpoint) -> ``Optimizer.state_dict()``'s
    integer-keyed form, the parameters numbered in ``model.parameters()`` order."""
    index = {name: i for i, name in enumerate(layout.names)}
    return {
        "state": {index[k]: v for k, v in osd["state"].items()},
        "param_groups": [
            dict(g, params=[index[p] for p in g["params"]]) for g in osd["param_groups"]
        ],
    }


def _by_name(osd: dict, layout: Layout) -> dict:
    return {
        "state": {layout.names[int(k)]: v for k, v in osd["state"].items()},
        "param_groups": [
            dict(g, params=[layout.names[int(p)] for p in g["params"]]) for g in osd["param_groups"]
        ],
    }


def _covers_storage(t: torch.Tensor) -> bool:
    return t.storage_offset() == 0 and t.untyped_storage().nbytes() == t.numel() * t.element_size()


def _gathered(model, optimizer, layout: Layout, *, keep: bool):
    """(model view, optimiser view) of a sharded model's full state, in the single-process
    format, on the ranks where ``keep``; a collective (every rank calls it)."""
    from torch.distributed.checkpoint.state_dict import (  # only a sharded model gets here
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    msd = get_model_state_dict(model, options=options)
    osd = get_optimizer_state_dict(model, optimizer, options=options)
    if not keep:
        return None, None
    # a gathered tensor may sit in a larger (padded) buffer: safetensors refuses to save a
    # tensor that does not cover its storage, so copy those
    msd = {k: v if _covers_storage(v) else v.clone() for k, v in msd.items()}
    for alias, name in layout.aliases.items():  # tied weights: one tensor, as in a process
        if alias in msd:
            msd[alias] = msd[name]
    return _StateView(msd), _OptimizerView(_by_index(osd, layout))


def save_full_checkpoint(
    comm: Comm, run_dir, step: int, *, model, optimizer, scheduler, trainer_state: dict,
    keep: int, layout: Layout,
) -> Path | None:  # fmt: skip
    """Save the run's checkpoint with ``llm.runstate.checkpoint.save_checkpoint`` on rank 0
    (every rank calls this). A sharded model's full state is gathered first (a collective); a
    model that is not sharded (a world of one) is written as it is. Returns the folder on rank
    0, None elsewhere."""
    views = (model, optimizer)
    if is_sharded(model):
        views = _gathered(model, optimizer, layout, keep=comm.is_main)
    path = None
    if comm.is_main:
        path = save_checkpoint(
            run_dir, step, model=views[0], optimizer=views[1], scheduler=scheduler,
            trainer_state=trainer_state, keep=keep,
        )  # fmt: skip
    comm.barrier()
    return path


def load_full_checkpoint(ckpt: Path, *, model, optimizer, scheduler, layout: Layout) -> None:
    """Load a single-process-format optimiser (and scheduler) state into the optimiser of a
    model, sharded or not (every rank reads the file: the run folder must be on a shared
    filesystem). The weights are loaded before sharding, by
    ``llm.runstate.checkpoint.load_checkpoint``."""
    if not is_sharded(model):
        # the weights' load has just verified this checkpoint's hashes
        load_checkpoint(ckpt, model=None, optimizer=optimizer, scheduler=scheduler,
                        restore_rng=False, hashes=False)  # fmt: skip
        return
    from torch.distributed.checkpoint.state_dict import (  # only a sharded model gets here
        StateDictOptions,
        set_optimizer_state_dict,
    )

    osd = torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=True)
    set_optimizer_state_dict(
        model, optimizer, _by_name(osd, layout), options=StateDictOptions(full_state_dict=True)
    )
    scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=True))
