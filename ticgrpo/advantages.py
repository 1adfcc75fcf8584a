"""Group-relative advantages (SPEC section 2).

Groups are contiguous blocks of ``G`` sequences that share a prompt: rewards ``[N]`` are viewed as
``[P, G]`` with ``N = P·G``. Every mode returns ``[N]`` in the rewards' floating dtype (float32 for
integer or bool rewards).

| mode               | formula                                      | used by                   |
|--------------------|----------------------------------------------|---------------------------|
| `std`              | (r_i − mean_G r) / (std_G r + δ)             | GRPO, TIC-GRPO            |
| `mean`             | r_i − mean_G r                               | Dr. GRPO                  |
| `rloo`             | r_i − mean_{j≠i} r_j = G/(G−1)·(r_i − mean)  | RLOO                      |
| `length_corrected` | the `std` formula applied to r_i / L_i       | TIC-GRPO (later versions) |
| `none`             | r_i                                          | exact-expectation checks  |

A group whose rewards are all equal gets advantage exactly 0 (never NaN, never a rounding residue).
"""

from __future__ import annotations

import torch

ADVANTAGE_MODES = ("std", "mean", "rloo", "length_corrected", "none")
STD_KINDS = ("sample", "population")


def _check_rewards(rewards: torch.Tensor, group_size: int) -> None:
    if not isinstance(rewards, torch.Tensor):
        raise TypeError(
            f"rewards must be a torch.Tensor of shape [N], got {type(rewards).__name__}"
        )
    if rewards.dim() != 1:
        raise ValueError(f"rewards must have shape [N], got {tuple(rewards.shape)}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")
    n = rewards.shape[0]
    if n % group_size != 0:
        raise ValueError(
            f"group_size={group_size} does not divide the number of sequences N={n}; groups are "
            "contiguous blocks of G sequences sharing a prompt"
        )
    bad = ~torch.isfinite(rewards.double()) if rewards.is_floating_point() else None
    if bad is not None and bool(bad.any()):
        idx = int(bad.nonzero()[0, 0])
        raise ValueError(f"rewards[{idx}] = {rewards[idx].item()} is not finite")


def group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    *,
    mode: str = "std",
    eps: float = 1e-6,
    lengths: torch.Tensor | None = None,
    std_kind: str = "sample",
) -> torch.Tensor:
    """Per-sequence advantages ``[N]`` from rewards ``[N]`` in contiguous groups of ``group_size``.

    Args:
        rewards: ``[N]`` terminal rewards; ``N`` must be a multiple of ``group_size``.
        group_size: ``G``, sequences per prompt.
        mode: one of ``ADVANTAGE_MODES`` (table in the module docstring).
        eps: ``δ`` added to the group standard deviation (``std`` and ``length_corrected``).
        lengths: ``[N]`` response lengths ``L_i > 0``; required by ``length_corrected``.
        std_kind: ``"sample"`` (divide by G−1, as ``torch.std``; TRL and verl) or ``"population"``
            (divide by G).
    """
    _check_rewards(rewards, group_size)
    if mode not in ADVANTAGE_MODES:
        raise ValueError(f"unknown advantage mode {mode!r}; expected one of {ADVANTAGE_MODES}")
    if std_kind not in STD_KINDS:
        raise ValueError(f"unknown std_kind {std_kind!r}; expected one of {STD_KINDS}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    dtype = rewards.dtype if rewards.is_floating_point() else torch.float32
    r = rewards.to(dtype)
    if mode == "none":
        return r.clone()
    if mode == "length_corrected":
        if lengths is None:
            raise ValueError("mode='length_corrected' needs lengths=[N] response lengths")
        if lengths.shape != rewards.shape:
            raise ValueError(
                f"lengths must have shape {tuple(rewards.shape)} like rewards, got {tuple(lengths.shape)}"
            )
        if bool((lengths <= 0).any()):
            idx = int((lengths <= 0).nonzero()[0, 0])
            raise ValueError(
                f"lengths[{idx}] = {lengths[idx].item()}; response lengths must be > 0"
            )
        r = r / lengths.to(dtype)
    g = group_size
    needs_spread = mode in ("std", "length_corrected", "rloo")
    if needs_spread and g == 1:
        raise ValueError(
            f"mode={mode!r} needs groups of at least 2 sequences (group_size=1 has no spread or "
            "leave-one-out baseline); use mode='none' or a larger group"
        )
    grouped = r.view(-1, g)  # [P, G]
    mean = grouped.mean(dim=1, keepdim=True)  # [P, 1]
    constant = grouped.amax(dim=1, keepdim=True) == grouped.amin(dim=1, keepdim=True)  # [P, 1]
    centred = torch.where(constant, torch.zeros_like(grouped), grouped - mean)  # [P, G]
    if mode == "mean":
        adv = centred
    elif mode == "rloo":
        adv = centred * (g / (g - 1))
    else:
        std = grouped.std(dim=1, keepdim=True, correction=1 if std_kind == "sample" else 0)
        # A constant group has std 0: with eps = 0 the division would be 0/0.
        adv = torch.where(constant, torch.zeros_like(grouped), centred / (std + eps))
    return adv.reshape(-1)
