"""Diagnostics of one policy-loss evaluation; every value is a finite Python float."""

from __future__ import annotations

import math

import torch


def _finite(x: float) -> float:
    return x if math.isfinite(x) else (0.0 if math.isnan(x) else math.copysign(1e308, x))


def masked_stats(x: torch.Tensor, mask: torch.Tensor) -> tuple[float, float, float]:
    """``(mean, min, max)`` of ``x`` where ``mask`` holds; zeros when nothing is selected."""
    sel = x[mask]
    if sel.numel() == 0:
        return 0.0, 0.0, 0.0
    sel = sel.double()
    return tuple(_finite(float(v)) for v in (sel.mean(), sel.min(), sel.max()))  # type: ignore[return-value]


def effective_sample_size(log_w: torch.Tensor) -> float:
    """ESS ``(Σ w)² / Σ w²`` of weights ``w = exp(log_w)`` ``[N]``, in log space (never overflows).

    Equals N for equal weights and tends to 1 when one weight dominates.
    """
    if log_w.numel() == 0:
        return 0.0
    lw = log_w.double()
    return _finite(float(torch.exp(2 * torch.logsumexp(lw, 0) - torch.logsumexp(2 * lw, 0))))


def fraction(flags: torch.Tensor, mask: torch.Tensor) -> float:
    """Share of masked entries where ``flags`` holds."""
    count = int(mask.sum())
    return float((flags & mask).sum()) / count if count else 0.0


def finite_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Replace any non-finite value so logs and dashboards never see NaN or inf."""
    return {k: _finite(float(v)) for k, v in metrics.items()}
