"""RNG streams of a checkpoint: snapshot and restore every random state a run draws from.

A snapshot holds python ``random``, numpy's global RNG, the torch CPU generator, every CUDA
device's generator (when CUDA is available) and any named ``torch.Generator``; it holds only
tensors and plain python values, so it loads with ``torch.load(weights_only=True)``. Saved as
``rng.pt`` by ``llm.runstate.checkpoint.save_checkpoint`` and restored by ``load_checkpoint``.
A generator missing from a snapshot is a ``CheckpointError`` (``llm.runstate.errors``).
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from llm.runstate.errors import CheckpointError, CheckpointWarning


def rng_state(generators: Mapping[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Snapshot of python `random`, numpy's global RNG, torch CPU, every CUDA device (when CUDA
    is available) and the named `generators`. Only tensors and plain python values, so the
    snapshot loads with `torch.load(weights_only=True)`."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "torch_cpu": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }
    return state


def set_rng_state(
    state: Mapping[str, Any], generators: Mapping[str, torch.Generator] | None = None
) -> None:
    """Restore a snapshot taken by `rng_state`; every generator named in `generators` must be
    present in the snapshot."""
    random.setstate(_as_tuple(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch_cpu"])
    cuda_states = list(state.get("cuda", []))
    if torch.cuda.is_available() and cuda_states:
        if len(cuda_states) != torch.cuda.device_count():
            warnings.warn(
                f"checkpoint holds {len(cuda_states)} CUDA RNG states but "
                f"{torch.cuda.device_count()} devices are visible; restoring the common prefix",
                CheckpointWarning,
                stacklevel=3,
            )
        for device, s in enumerate(cuda_states[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, device)
    saved = state.get("generators", {})
    for name, g in (generators or {}).items():
        if name not in saved:
            raise CheckpointError(
                f"generator {name!r} is not in the checkpoint (it holds: {sorted(saved)})"
            )
        g.set_state(saved[name])


def _as_tuple(x: Any) -> Any:
    """`random.setstate` wants nested tuples; a round trip may have turned them into lists."""
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x
