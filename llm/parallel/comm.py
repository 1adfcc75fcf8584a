"""The communicator: one object for a run of 1 or N processes (``torchrun ... distributed=true``).

A plain run is a world of one: ``start`` returns a ``Comm`` of world size 1 whose reductions are
identities, whose ``seed`` is the single-process seed and whose ``shard`` (``llm.parallel.fsdp``)
leaves the model whole. The training loop calls the same stages either way; what changes with W
processes is only what these calls do:

- **Rollout.** The prompt stream is global: every step each rank draws the same ``P`` prompts and
  keeps its contiguous slice of ``P / W`` (``local_prompts``; ``prompts_per_step`` must be a
  multiple of ``W``, the config check says so), so the ``G`` samples of a prompt are generated,
  scored and advantaged on one rank (exact: advantages only look inside a group). Generation
  runs with every FSDP unit gathered once (``llm.parallel.fsdp.unsharded``): decoding then makes
  no collective call, so ranks stop at their own EOS and their own number of ``generate`` calls.
  Sampling seeds are ``(seed, step, rank)`` (``Comm.seed``).
- **Update.** ``llm.update.inner_steps.inner_steps``: each optimiser step takes
  ``minibatch_size/W`` rows of every rank; ``num_seqs``/``num_tokens`` are summed over ranks;
  FSDP sums (divide factor 1) the gradients, so the step is the single-process step on the union
  (tested to 1e-10).
- **Decisions.** DAPO refill rounds, the non-finite skip and the loss are summed over ranks, so
  every rank takes the same branch (a rank never steps or generates alone).
- **Output.** Rank 0 alone writes ``config.yaml``, ``metrics.jsonl``, samples and checkpoints
  (``on_main``, ``reduce_step_metrics``); a checkpoint holds the gathered full model and an
  optimiser state in the single-process format (``llm.parallel.checkpoint``), so a run resumes
  in any number of processes. RNG: every draw is seeded from ``(seed, step, rank)``, so only
  rank 0's global RNG state is stored.

The collectives themselves (process group, sums, gathers, global normalisers) are
``llm.parallel.collectives``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from llm.config.train_config import ConfigError
from llm.parallel.collectives import (
    DistInfo,
    all_reduce_sum,
    gather_list,
    init_distributed,
    teardown,
)

__all__ = [
    "Comm",
    "WORLD_OF_ONE",
    "as_comm",
    "device_for",
    "start",
    "finish",
    "on_main",
    "local_prompts",
    "reduce_step_metrics",
]


@dataclass(frozen=True)
class Comm:
    """This process's place in the data-parallel world, with the reductions the loop needs.

    In a world of one (``world_size == 1``) every reduction returns its input: the same code is
    the single-process run."""

    info: DistInfo

    @property
    def rank(self) -> int:
        return self.info.rank

    @property
    def world_size(self) -> int:
        return self.info.world_size

    @property
    def is_main(self) -> bool:
        return self.info.rank == 0

    @property
    def device(self) -> torch.device:
        """Where this process computes."""
        return self.info.device

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over ranks (float64)."""
        if self.world_size == 1:
            return [float(v) for v in values]
        return all_reduce_sum(values, device=self._comm_device)

    def gather(self, items: list) -> list:
        """Every rank's list, concatenated in rank order."""
        if self.world_size == 1:
            return list(items)
        return gather_list(items)

    def broadcast(self, obj: object) -> object:
        """Rank 0's ``obj`` on every rank (picklable)."""
        if self.world_size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def seed(self, base: int) -> int:
        """A per-rank seed derived from ``base`` (distinct ranks, distinct streams); a world of
        one keeps ``base`` itself, so a single-process run draws what it always drew."""
        return base if self.world_size == 1 else base * 65_537 + self.rank

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    @property
    def _comm_device(self) -> torch.device:
        return self.info.device if self.info.backend == "nccl" else torch.device("cpu")


#: The single-process world (CPU); stage functions called without a communicator use it.
WORLD_OF_ONE = Comm(DistInfo())


def as_comm(comm: Comm | None) -> Comm:
    """``comm``, or the world of one for callers (tests, benchmarks) that pass none."""
    return WORLD_OF_ONE if comm is None else comm


def device_for(cfg) -> torch.device:
    """``cfg.device``, with ``auto`` meaning CUDA when available, else the CPU."""
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def start(cfg) -> Comm:
    """Join the torchrun process group when ``cfg.distributed`` and ``WORLD_SIZE > 1``; otherwise
    a world of one on ``cfg.device``. ``device=cpu`` uses gloo, anything else nccl on
    ``LOCAL_RANK``."""
    if not cfg.distributed or int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return Comm(DistInfo(device=device_for(cfg)))
    backend = "gloo" if cfg.device == "cpu" or not torch.cuda.is_available() else "nccl"
    info = init_distributed(backend)
    if backend == "gloo":
        info = DistInfo(info.rank, info.world_size, info.local_rank, torch.device("cpu"), backend)
    return Comm(info)


def finish(comm: Comm) -> None:
    """Leave the process group ``start`` joined (a world of one joined none)."""
    if comm.info.backend is not None:
        teardown()


def on_main(comm: Comm, fn: Callable[[], object]) -> object:
    """Run ``fn`` on rank 0 only and hand its result (or its error) to every rank.

    Rank 0 re-raises its own exception; the other ranks raise a ``ConfigError`` with the same
    problems, or rank 0's error class with its message (a ``RuntimeError`` naming it when the
    class takes other arguments), so no rank is left waiting. The error carries
    ``on_every_rank = True``: all ranks raise it together.
    """
    outcome: tuple = ("ok", None)
    error: BaseException | None = None
    if comm.is_main:
        try:
            outcome = ("ok", fn())
        except ConfigError as e:
            outcome, error = ("config", e.problems), e
        except Exception as e:  # noqa: BLE001 - forwarded to the other ranks, then re-raised
            outcome, error = ("error", (type(e), str(e))), e
    kind, value = comm.broadcast(outcome)
    if kind == "ok":
        return value
    if error is None and kind == "config":
        error = ConfigError(value)
    elif error is None:  # the same error class where it takes a message (RunFolderError, ...)
        cls, message = value
        try:
            error = cls(message)
        except Exception:  # noqa: BLE001 - a class with another signature
            error = RuntimeError(f"rank 0 failed: {cls.__name__}: {message}")
    # every rank raises it at this point, so a caller may meet the others (e.g. at a barrier)
    error.on_every_rank = True
    raise error


def local_prompts(next_prompts: Callable[[int], list], comm: Comm) -> Callable[[int], list]:
    """``next(k)`` for this rank: draw ``k·W`` prompts from the global stream, keep block ``rank``.
    Every rank draws the same prompts, so the stream position stays global (W = 1: the stream)."""

    def draw(k: int) -> list:
        pairs = next_prompts(k * comm.world_size)
        return pairs[comm.rank * k : (comm.rank + 1) * k]

    return draw


def reduce_step_metrics(
    comm: Comm, local: dict[str, float], *, entropy: tuple[float, float], tokens: int
) -> dict[str, float]:
    """Global values of one step's per-rank metrics (every rank gets the same dict).

    ``timing/*``: max over ranks (the slowest rank sets the pace); ``reward_check/*``: sums
    (outcome counters); ``*_min`` / ``*_max``: min / max; ``entropy``: the token-weighted mean
    from each rank's (sum, count); ``tokens_per_s``: all ranks' response tokens over the slowest
    step time; anything else: the mean over the ranks that logged it (ranks hold equal numbers of
    rows and micro-batches, so that is the mean over all of them). In a world of one the local
    values are the global ones and come back as they are.
    """
    if comm.world_size == 1:
        return dict(local)
    parts = comm.gather([(dict(local), entropy, tokens)])
    out: dict[str, float] = {}
    keys = sorted({k for m, _, _ in parts for k in m})
    for key in keys:
        vals = [float(m[key]) for m, _, _ in parts if key in m]
        if key.startswith("timing/") or key.endswith("_max"):
            out[key] = max(vals)
        elif key.endswith("_min"):
            out[key] = min(vals)
        elif key.startswith("reward_check/"):
            out[key] = sum(vals)
        else:
            out[key] = sum(vals) / len(vals)
    ent_sum, ent_count = (sum(e[i] for _, e, _ in parts) for i in (0, 1))
    out["entropy"] = ent_sum / max(ent_count, 1.0)
    if "timing/step_s" in out:
        out["tokens_per_s"] = sum(t for _, _, t in parts) / max(out["timing/step_s"], 1e-9)
    return out
