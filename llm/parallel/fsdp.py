"""FSDP2 (``fully_shard``) for the trainer: shard the model, gather it for sampling.

``shard`` wraps each decoder layer and then the root in a world of N processes and leaves the
model as it is in a world of one (``llm.parallel.comm.Comm``), so the trainer calls it either way.
``unsharded`` keeps every unit gathered while generating (no collective per decoding step);
``is_sharded`` tells the checkpoint glue (``llm.parallel.checkpoint``) which format it holds.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from llm.parallel.comm import Comm

__all__ = ["shard", "shard_model", "reshard", "unsharded", "is_sharded"]


def shard_model(
    model: nn.Module,
    *,
    param_dtype: torch.dtype | None = None,
    reduce_dtype: torch.dtype | None = torch.float32,
    reshard_after_forward: bool = True,
) -> nn.Module:
    """Wrap an HF causal LM with FSDP2: each decoder layer is its own unit, the rest the root.

    Gradients are *summed* across ranks (divide factor 1): callers divide their local loss by the
    global normaliser (``global_normalisers``), so the sum is the gradient of the global loss.
    ``param_dtype`` (e.g. bf16 on GPU) turns on FSDP2 mixed precision with ``reduce_dtype``
    gradients. The embedding, final norm and (tied) lm_head stay in the root unit, whose
    parameters FSDP2 keeps gathered from forward to backward — ``llm.update.logprobs`` applies
    lm_head after the root forward and relies on that.

    Build the optimizer *after* this call and *before* any forward: between steps the model holds
    the sharded parameters; right after a forward the root's gathered copies are registered
    instead, and an optimizer built then would update copies that FSDP throws away. After a
    no-grad pass, ``reshard(model)`` frees those copies.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise ValueError(
            f"shard_model expects an HF causal LM with .model.layers; got {type(model).__name__}"
        )
    mp = None
    if param_dtype is not None:
        mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    kw = {"mp_policy": mp} if mp is not None else {}
    for layer in layers:
        fully_shard(layer, reshard_after_forward=reshard_after_forward, **kw)
    fully_shard(model, **kw)
    for module in model.modules():  # the factor is per FSDP unit
        if hasattr(module, "set_gradient_divide_factor"):
            module.set_gradient_divide_factor(1.0)
    return model


def reshard(model: nn.Module) -> None:
    """Free the gathered parameters FSDP2 keeps after a forward (no-op without FSDP).

    The root unit stays gathered after its forward (it expects a backward); after a no-grad pass
    (sampling, old or reference log-probs) nothing will reshard it, so call this before the
    training phase to give the memory back and to leave the sharded parameters registered.
    """
    for module in model.modules():
        if hasattr(module, "reshard") and hasattr(module, "set_gradient_divide_factor"):
            module.reshard()


def _fsdp_units(model: nn.Module) -> list[nn.Module]:
    from torch.distributed.fsdp import FSDPModule  # loaded only when something may be sharded

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def is_sharded(model: nn.Module) -> bool:
    """Whether ``fully_shard`` has wrapped ``model`` (its state lives across the ranks)."""
    return bool(_fsdp_units(model))


def shard(comm: Comm, model: nn.Module) -> nn.Module:
    """``fully_shard`` per decoder layer then the root (``shard_model``) in a world of N; a world
    of one keeps the plain model (nothing to share).

    Gloo has no PREMUL_SUM, which FSDP2 uses for a divide factor of 1 in fp32/bf16: force a plain
    SUM there (the result is the same sum).
    """
    if comm.world_size == 1:
        return model
    shard_model(model)
    if comm.info.backend == "gloo":
        for unit in _fsdp_units(model):
            unit.set_force_sum_reduction_for_comms(True)
    return model


@contextlib.contextmanager
def unsharded(model: nn.Module):
    """Every FSDP unit gathered for the duration (one collective on entry), and kept gathered
    across forwards, so generation makes no collective call and ranks may run different numbers
    of decoding steps. Costs one full copy of the weights per rank while active. A model that
    is not sharded is already whole: nothing is done."""
    units = _fsdp_units(model)
    if not units:
        yield model
        return
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
