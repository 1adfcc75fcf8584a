"""Fits and confidence intervals used by the report (numpy/scipy only; never imports the trainer).

- ``loglog_fit``: OLS slope of ``log y`` on ``log x`` with its standard error and 95% interval.
- ``bootstrap_loglog``: the same slope with a percentile interval from resampling whole units
  (seeds), for points that are correlated within a unit.
- ``mean_ci``: Student-t interval of a mean; ``paired_diff_ci`` for paired differences.
- ``fit_rate_shape``: non-negative least squares of ``S ≈ a/(ηKN) + b·ηK + c/G``.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, stats


def loglog_fit(x, y) -> dict:
    """Slope of ``log y = α + s·log x``: ``{"slope", "se", "ci": [lo, hi], "intercept", "r2", "n"}``.

    Points with non-positive ``x`` or ``y`` are dropped (they have no logarithm).
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = (x > 0) & (y > 0) & np.isfinite(x) & np.isfinite(y)
    lx, ly = np.log(x[keep]), np.log(y[keep])
    n = int(keep.sum())
    if n < 3:
        raise ValueError(f"log-log fit needs at least 3 positive points, got {n}")
    res = stats.linregress(lx, ly)
    half = stats.t.ppf(0.975, n - 2) * res.stderr
    return {
        "slope": float(res.slope),
        "se": float(res.stderr),
        "ci": [float(res.slope - half), float(res.slope + half)],
        "intercept": float(res.intercept),
        "r2": float(res.rvalue**2),
        "n": n,
    }


def bootstrap_loglog(x, y, unit, *, reps: int = 1000, seed: int = 0) -> dict:
    """``loglog_fit`` on all points, with a 95% percentile interval from resampling ``unit`` ids."""
    x, y, unit = np.asarray(x, float), np.asarray(y, float), np.asarray(unit)
    base = loglog_fit(x, y)
    rng = np.random.default_rng(seed)
    ids = np.unique(unit)
    members = [np.flatnonzero(unit == u) for u in ids]
    slopes = []
    for _ in range(reps):
        pick = np.concatenate([members[i] for i in rng.integers(len(ids), size=len(ids))])
        try:
            slopes.append(loglog_fit(x[pick], y[pick])["slope"])
        except ValueError:
            continue
    lo, hi = np.percentile(slopes, [2.5, 97.5])
    return {**base, "ci": [float(lo), float(hi)], "se": float(np.std(slopes, ddof=1))}


def mean_ci(values, level: float = 0.95) -> dict:
    """``{"mean", "se", "ci": [lo, hi], "n"}`` with a Student-t interval."""
    v = np.asarray(values, float)
    n = v.size
    se = float(v.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * se) if n > 1 else float("nan")
    m = float(v.mean())
    return {"mean": m, "se": se, "ci": [m - half, m + half], "n": int(n)}


def paired_diff_ci(a, b, level: float = 0.95) -> dict:
    """``mean_ci`` of the paired differences ``a − b`` (same seeds)."""
    return mean_ci(np.asarray(a, float) - np.asarray(b, float), level)


def fit_rate_shape(eta, k, n, g, s) -> dict:
    """Fit ``s ≈ a/(η·K·N) + b·η·K + c/G`` with ``a, b, c ≥ 0`` (non-negative least squares).

    Residuals are weighted by ``1/s`` (relative error), so small and large values count alike.
    Returns the constants, the relative RMS error and ``r2`` of the weighted fit.
    """
    eta, k, n, g, s = (np.asarray(v, float) for v in (eta, k, n, g, s))
    design = np.stack([1 / (eta * k * n), eta * k, 1 / g], axis=1)
    w = 1 / s
    coef, _ = optimize.nnls(design * w[:, None], s * w)
    pred = design @ coef
    rel = (pred - s) / s
    ss_res = float(np.sum(rel**2))
    ss_tot = float(np.sum(((s - s.mean()) / s) ** 2))
    return {
        "a": float(coef[0]),
        "b": float(coef[1]),
        "c": float(coef[2]),
        "rel_rmse": float(np.sqrt(np.mean(rel**2))),
        "r2": 1 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
        "n": int(s.size),
    }
