"""The process group and its collectives: what data-parallel training needs to be exact.

What has to be global for a sharded update to equal the single-process one:

- **Groups stay whole.** Prompts (not sequences) are split across ranks, so the ``G`` samples of a
  prompt live on one rank and ``group_advantages`` computed locally is exactly the slice of the
  advantages of the whole batch (every advantage mode only looks inside its group).
- **Normalisers are global.** Each rank's loss is its own terms divided by the *global* count
  (``num_seqs`` = N over all ranks, ``num_tokens`` = Σ mask over all ranks, ``max_len`` the shared
  constant), and FSDP sums (not averages) the gradients across ranks. Then
  ``Σ_ranks ∇ loss_rank = ∇ loss_global`` exactly, even when ranks hold different numbers of
  prompts (``P`` not a multiple of the world size).
- **Metrics** are reduced with the right operation: sums of counts, means weighted by each rank's
  share, minima and maxima.

Launch: ``torchrun --nproc-per-node 8 -m ticgrpo.cli train ...``; a plain ``python`` run (no
``WORLD_SIZE`` in the environment) is a world of one and every helper here is then a no-op.
Sharding the model is ``llm.parallel.fsdp``; the trainer's view of all this, one object for 1 or
N processes, is ``llm.parallel.comm.Comm``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "init_distributed",
    "teardown",
    "prompt_shard",
    "global_normalisers",
    "all_reduce_sum",
    "reduce_metrics",
    "gather_list",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size``, its device and the backend in use."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 and dist.is_available() and dist.is_initialized()


def init_distributed(backend: str | None = None, *, timeout_s: float = 600.0) -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment.

    Backend: ``nccl`` when CUDA is available, else ``gloo`` (CPU), unless given. Without
    ``WORLD_SIZE > 1`` in the environment nothing is initialised and a world of one is returned.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world <= 1:
        return DistInfo(device=device)
    backend = backend or ("nccl" if cuda else "gloo")
    if not dist.is_initialized():
        kwargs = {"device_id": device} if backend == "nccl" else {}
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s), **kwargs)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device, backend)


def teardown() -> None:
    """Leave the process group (safe to call when none was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def prompt_shard(num_prompts: int, world_size: int, rank: int) -> range:
    """The prompts rank ``rank`` owns: a contiguous block; the first ``P mod W`` ranks get one more.

    Sequence ``i`` of prompt ``p`` is global row ``p·G + i``, so the rank's rows are
    ``range(start·G, stop·G)``. Every rank needs at least one prompt (FSDP's collectives run in
    lockstep, so an idle rank would still have to join each forward); P < W is an error.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of size {world_size}")
    if num_prompts < world_size:
        raise ValueError(
            f"{num_prompts} prompts cannot give each of {world_size} ranks a whole group; "
            "use at least one prompt per rank"
        )
    base, extra = divmod(num_prompts, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def _comm_device(device: torch.device | None = None) -> torch.device:
    """Where small reduction buffers must live: NCCL only moves CUDA tensors, gloo CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu") if device is None or device.type == "cuda" else device


def all_reduce_sum(values: list[float], device: torch.device | None = None) -> list[float]:
    """Element-wise sum of a list of floats over all ranks (identity in a world of one)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [float(v) for v in values]
    buf = torch.tensor(values, dtype=torch.float64, device=_comm_device(device))
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.tolist()


def global_normalisers(mask: torch.Tensor, *, max_len: int) -> dict[str, float]:
    """Global ``num_seqs`` and ``num_tokens`` for ``policy_loss`` from each rank's mask [n, T].

    ``num_seqs = Σ_ranks n``, ``num_tokens = Σ_ranks Σ mask`` (a mini-batch's counts: pass each
    mini-batch's mask); ``max_len`` is the length budget ``T`` (the config's ``max_new_tokens``,
    the same on every rank) and is required: the padded width of a rank's batch is not the budget.
    """
    n_seqs, n_tokens = all_reduce_sum([mask.shape[0], float(mask.sum())], device=mask.device)
    return {
        "num_seqs": n_seqs,
        "num_tokens": max(n_tokens, 1.0),
        "max_len": float(max_len),
    }


def reduce_metrics(
    metrics: dict[str, float], weight: float = 1.0, device: torch.device | None = None
) -> dict[str, float]:
    """Combine per-rank metrics into global ones (identity in a world of one).

    Keys ending in ``min``/``max`` take the min/max over ranks; keys starting with ``count/`` or
    ending in ``/sum`` are summed; every other key is a mean weighted by ``weight`` (the rank's
    share, e.g. its sequence count). Every rank must pass the same keys.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return dict(metrics)
    keys = sorted(metrics)
    gathered = gather_list([keys])
    if any(k != keys for k in gathered):
        raise ValueError(f"ranks logged different metric keys: {gathered}")
    device = _comm_device(device)
    vals = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64, device=device)
    w = torch.tensor([float(weight)], dtype=torch.float64, device=device)
    lo, hi, weighted = vals.clone(), vals.clone(), vals * w
    for t, op in ((lo, dist.ReduceOp.MIN), (hi, dist.ReduceOp.MAX), (weighted, dist.ReduceOp.SUM)):
        dist.all_reduce(t, op=op)
    summed = vals.clone()
    dist.all_reduce(summed, op=dist.ReduceOp.SUM)
    dist.all_reduce(w, op=dist.ReduceOp.SUM)
    out = {}
    for i, k in enumerate(keys):
        if k.endswith("min"):
            out[k] = lo[i].item()
        elif k.endswith("max"):
            out[k] = hi[i].item()
        elif k.startswith("count/") or k.endswith("/sum"):
            out[k] = summed[i].item()
        else:
            out[k] = (weighted[i] / w.clamp(min=1e-300)).item()
    return out


def gather_list(items: list) -> list:
    """Concatenate each rank's list in rank order (picklable items; any lengths)."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(items)
    parts: list[list] = [None] * dist.get_world_size()  # type: ignore[list-item]
    dist.all_gather_object(parts, list(items))
    return [x for part in parts for x in part]
