"""The trainer's data-parallel glue: ``torchrun ... ticgrpo train --set distributed=true``.

``llm.parallel.fsdp`` holds the generic pieces (process group, ``fully_shard`` per decoder layer then
root, prompt sharding, global sums); this module adapts the training loop to them:

- **Rollout.** The prompt stream is global: every step each rank draws the same ``P`` prompts and
  keeps its contiguous slice of ``P / W`` (``prompts_per_step`` must be a multiple of the world
  size ``W``; the config check says so), so the ``G`` samples of a prompt are generated, scored
  and advantaged on one rank (exact: advantages only look inside a group). Generation runs with
  every FSDP unit gathered once (``unsharded``): decoding then makes no collective call, so ranks
  stop at their own EOS and their own number of ``generate`` calls. Sampling seeds are
  ``(seed, step, rank)``.
- **Update.** ``llm.update.inner_steps.inner_steps(comm=...)``: each optimiser step takes ``minibatch_size/W``
  rows of every rank; ``num_seqs``/``num_tokens`` are summed over ranks; FSDP sums (divide factor
  1) the gradients, so the step is the single-process step on the union (tested to 1e-10).
- **Decisions.** DAPO refill rounds, the non-finite skip and the loss are summed over ranks, so
  every rank takes the same branch (a rank never steps or generates alone).
- **Output.** Rank 0 alone writes ``config.yaml``, ``metrics.jsonl``, samples and checkpoints; a
  checkpoint holds the gathered full model and an optimiser state in the single-process format
  (``llm.parallel.checkpoint``), so a run resumes in any number of processes.
  RNG: every draw is seeded from ``(seed, step, rank)``, so only rank 0's global RNG state is
  stored.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from llm.parallel.fsdp import (
    DistInfo,
    all_reduce_sum,
    gather_list,
    init_distributed,
    shard_model,
    teardown,
)

__all__ = [
    "Comm",
    "start",
    "finish",
    "on_main",
    "shard",
    "unsharded",
    "local_prompts",
    "reduce_step_metrics",
    "evaluate_sharded",
    "NullLogger",
]


@dataclass(frozen=True)
class Comm:
    """This process's place in the data-parallel world, with the reductions the loop needs."""

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

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over ranks (float64)."""
        return all_reduce_sum(values, device=self._comm_device)

    def gather(self, items: list) -> list:
        """Every rank's list, concatenated in rank order."""
        return gather_list(items)

    def seed(self, base: int) -> int:
        """A per-rank seed derived from ``base`` (distinct ranks, distinct streams)."""
        return base * 65_537 + self.rank

    def barrier(self) -> None:
        dist.barrier()

    @property
    def _comm_device(self) -> torch.device:
        return self.info.device if self.info.backend == "nccl" else torch.device("cpu")


def start(cfg) -> Comm | None:
    """Join the torchrun process group when ``cfg.distributed`` and ``WORLD_SIZE > 1``; else None
    (the single-process path). ``device=cpu`` uses gloo, anything else nccl on ``LOCAL_RANK``."""
    if not cfg.distributed or int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return None
    backend = "gloo" if cfg.device == "cpu" or not torch.cuda.is_available() else "nccl"
    info = init_distributed(backend)
    if backend == "gloo":
        info = DistInfo(info.rank, info.world_size, info.local_rank, torch.device("cpu"), backend)
    return Comm(info)


def finish(comm: Comm | None) -> None:
    if comm is not None:
        teardown()


def on_main(comm: Comm | None, fn: Callable[[], object]) -> object:
    """Run ``fn`` on rank 0 only and hand its result (or its error) to every rank.

    A ``ConfigError`` raised on rank 0 is re-raised on every rank, so no rank is left waiting.
    """
    from llm.config.train_config import ConfigError

    if comm is None:
        return fn()
    box: list = [None]
    if comm.is_main:
        try:
            box[0] = ("ok", fn())
        except ConfigError as e:
            box[0] = ("config", e.problems)
        except Exception as e:  # noqa: BLE001 - forwarded to the other ranks, then re-raised
            box[0] = ("error", (type(e), str(e)))
            dist.broadcast_object_list(box, src=0)
            raise
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "config":
        raise ConfigError(value)
    if kind == "error":  # the same error class where it takes a message (RunFolderError, ...)
        cls, message = value
        try:
            error = cls(message)
        except Exception:  # noqa: BLE001 - a class with another signature
            error = RuntimeError(f"rank 0 failed: {cls.__name__}: {message}")
        raise error
    return value


# ---------------------------------------------------------------------------------------------
# the model


def _fsdp_units(model: torch.nn.Module) -> list[torch.nn.Module]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def shard(comm: Comm, model: torch.nn.Module) -> torch.nn.Module:
    """``fully_shard`` per decoder layer then the root (``llm.parallel.fsdp.shard_model``).

    Gloo has no PREMUL_SUM, which FSDP2 uses for a divide factor of 1 in fp32/bf16: force a plain
    SUM there (the result is the same sum).
    """
    shard_model(model)
    if comm.info.backend == "gloo":
        for unit in _fsdp_units(model):
            unit.set_force_sum_reduction_for_comms(True)
    return model


@contextlib.contextmanager
def unsharded(model: torch.nn.Module):
    """Every FSDP unit gathered for the duration (one collective on entry), and kept gathered
    across forwards, so generation makes no collective call and ranks may run different numbers
    of decoding steps. Costs one full copy of the weights per rank while active."""
    units = _fsdp_units(model)
    layers = [u for u in units if u is not model]  # the root's own policy is left untouched
    for unit in layers:
        unit.set_reshard_after_forward(False, recurse=False)
    for unit in units:
        unit.unshard()
    # fully_shard marks the model "_is_fsdp_managed_module", from which transformers' generate
    # turns on synced_gpus (an all-reduce per decoding step, every rank decoding until all are
    # done). With the weights gathered nothing needs syncing, so ranks decode independently.
    marked = model.__dict__.get("_is_fsdp_managed_module")
    model._is_fsdp_managed_module = False
    try:
        yield model
    finally:
        if marked is None:
            del model._is_fsdp_managed_module
        else:
            model._is_fsdp_managed_module = marked
        for unit in layers:
            unit.set_reshard_after_forward(True, recurse=False)
        for unit in units:
            unit.reshard()


def local_prompts(next_prompts: Callable[[int], list], comm: Comm) -> Callable[[int], list]:
    """``next(k)`` for this rank: draw ``k·W`` prompts from the global stream, keep block ``rank``.
    Every rank draws the same prompts, so the stream position stays global."""

    def draw(k: int) -> list:
        pairs = next_prompts(k * comm.world_size)
        return pairs[comm.rank * k : (comm.rank + 1) * k]

    return draw


# ---------------------------------------------------------------------------------------------
# metrics and evaluation


def reduce_step_metrics(
    comm: Comm, local: dict[str, float], *, entropy: tuple[float, float], tokens: int
) -> dict[str, float]:
    """Global values of one step's per-rank metrics (every rank gets the same dict).

    ``timing/*``: max over ranks (the slowest rank sets the pace); ``reward_check/*``: sums
    (outcome counters); ``*_min`` / ``*_max``: min / max; ``entropy``: the token-weighted mean
    from each rank's (sum, count); ``tokens_per_s``: all ranks' response tokens over the slowest
    step time; anything else: the mean over the ranks that logged it (ranks hold equal numbers of
    rows and micro-batches, so that is the mean over all of them).
    """
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


def _block(n: int, comm: Comm) -> slice:
    base, extra = divmod(n, comm.world_size)
    start = comm.rank * base + min(comm.rank, extra)
    return slice(start, start + base + (1 if comm.rank < extra else 0))


def evaluate_sharded(
    comm: Comm, model, tokenizer, examples: list, *, seed: int, **kwargs
) -> dict[str, float]:
    """``llm.evaluate.evaluate`` with the problems split into contiguous blocks over ranks, then
    the same metrics recomputed from every rank's per-problem results (identical on all ranks).
    ``kwargs`` are evaluate's (k, max_new_tokens, temperature, top_p, reward, ...)."""
    from llm.evaluate import evaluate, summarize

    mine = examples[_block(len(examples), comm)]
    out: dict = {"problems": [], "eval/nonfinite_rewards": 0.0, "eval/generate_s": 0.0}
    with unsharded(model):
        if mine:
            out = evaluate(model, tokenizer, mine, seed=comm.seed(seed), **kwargs)
    fields = ("num_correct", "rewards", "lengths", "truncated")
    problems = comm.gather([{f: p[f] for f in fields} for p in out["problems"]])
    timing = comm.gather([out["eval/generate_s"]])
    (bad,) = comm.sum([out["eval/nonfinite_rewards"]])
    k = kwargs["k"]
    n = len(problems) * k
    metrics = summarize([p["num_correct"] for p in problems], k)
    metrics.update({
        "eval/mean_reward": sum(r for p in problems for r in p["rewards"]) / n,
        "eval/mean_length": sum(x for p in problems for x in p["lengths"]) / n,
        "eval/truncated_frac": sum(t for p in problems for t in p["truncated"]) / n,
        "eval/num_problems": len(problems),
        "eval/nonfinite_rewards": bad,
        "eval/generate_s": max(timing),
    })  # fmt: skip
    return metrics


class NullLogger:
    """The logger of ranks other than 0: nothing is written."""

    def log(self, step: int, metrics: dict) -> dict:  # noqa: ARG002
        return dict(metrics)

    def samples(self, step: int, rows: list) -> None:  # noqa: ARG002
        return None

    def close(self) -> None:
        return None
