"""Fits and confidence intervals used by the report (numpy/scipy only; never imports the trainer).

- ``loglog_fit``: OLS slope of ``log y`` on ``log x`` with its standard error and 95% interval.
- ``jackknife_loglog``: the same slope with a leave-one-unit-out (seed) interval, for points
  correlated within a unit; ``binned_local_slopes``: slopes within quantile bins of ``x``.
- ``mean_ci``: Student-t interval of a mean; ``paired_diff_ci`` for paired differences.
- ``fit_exponent``: the exponent of ``E[y] ∝ x^a`` from per-seed curves, with a leave-one-seed-out
  (jackknife) interval and local slopes between neighbouring ``x`` (sampling error, not misfit).
- ``select_and_score``: choose a setting (e.g. η) on some seeds, score it on held-out seeds.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


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


def jackknife_loglog(x, y, unit, *, level: float = 0.95) -> dict:
    """``loglog_fit`` on all points with a Student-t interval from leave-one-unit-out slopes.

    ``unit`` ids (seeds) are the independent replicates; the jackknife needs no resampling, so it
    stays honest with ~10 units where a percentile bootstrap would not.
    """
    x, y, unit = np.asarray(x, float), np.asarray(y, float), np.asarray(unit)
    base = loglog_fit(x, y)
    ids = np.unique(unit)
    n = len(ids)
    if n < 3:
        raise ValueError(f"jackknife_loglog needs >= 3 units, got {n}")
    loo = np.array([loglog_fit(x[unit != u], y[unit != u])["slope"] for u in ids])
    se = float(np.sqrt((n - 1) / n * np.sum((loo - loo.mean()) ** 2)))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * se)
    return {**base, "se": se, "ci": [base["slope"] - half, base["slope"] + half], "units": n}


def binned_local_slopes(x, y, bins: int = 4) -> list[dict]:
    """Log-log slopes within ``bins`` quantile bins of ``x`` (a drifting slope = mixed regimes)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = (x > 0) & (y > 0)
    x, y = x[keep], y[keep]
    edges = np.quantile(x, np.linspace(0, 1, bins + 1))
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (x >= lo) & (x <= hi)
        if sel.sum() >= 3 and np.ptp(np.log(x[sel])) > 0:
            out.append({"x_lo": float(lo), "x_hi": float(hi),
                        "slope": loglog_fit(x[sel], y[sel])["slope"]})  # fmt: skip
    return out


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


def _slope(lx: np.ndarray, ly: np.ndarray) -> float:
    return float(np.polyfit(lx, ly, 1)[0])


def fit_exponent(x, y_by_seed, *, level: float = 0.95) -> dict:
    """Exponent ``a`` of ``mean_seeds y ∝ x^a`` with a seed-jackknife interval, and local slopes.

    ``x [n_x]`` positive, ``y_by_seed [n_seeds, n_x]`` positive (one curve per seed; seeds are the
    independent units). The point estimate is the OLS slope of ``log mean_s y`` on ``log x``; its
    interval is Student-t (``n_seeds − 1`` df) with the jackknife standard error over seeds, so it
    measures sampling noise, not departure from a power law (``r2`` reports that). ``local`` holds
    the slope between each pair of neighbouring ``x`` with its own jackknife interval: a slope that
    drifts along ``x`` means a mix of regimes, and only the last ones are asymptotic.

    Returns ``{"slope", "se", "ci", "r2", "n_seeds", "local": [{"x_lo", "x_hi", "slope", "ci"}]}``.
    """
    x = np.asarray(x, float)
    y = np.asarray(y_by_seed, float)
    if y.ndim != 2 or y.shape[1] != x.size:
        raise ValueError(f"y_by_seed must be [n_seeds, {x.size}], got {y.shape}")
    if np.any(x <= 0) or np.any(~np.isfinite(y)) or np.any(y <= 0):
        raise ValueError("fit_exponent needs positive x and positive finite y")
    n = y.shape[0]
    if n < 3 or x.size < 2:
        raise ValueError(f"fit_exponent needs >= 3 seeds and >= 2 x values, got {n}, {x.size}")
    lx = np.log(x)
    t = stats.t.ppf(0.5 + level / 2, n - 1)

    def jack(stat):
        full = stat(y)
        loo = np.array([stat(np.delete(y, i, axis=0)) for i in range(n)])
        se = float(np.sqrt((n - 1) / n * np.sum((loo - loo.mean()) ** 2)))
        return full, se

    slope, se = jack(lambda yy: _slope(lx, np.log(yy.mean(axis=0))))
    ly = np.log(y.mean(axis=0))
    resid = ly - np.polyval(np.polyfit(lx, ly, 1), lx)
    ss_tot = float(np.sum((ly - ly.mean()) ** 2))
    local = []
    for i in range(x.size - 1):
        s_i, se_i = jack(
            lambda yy, i=i: float(
                (np.log(yy[:, i + 1].mean()) - np.log(yy[:, i].mean())) / (lx[i + 1] - lx[i])
            )
        )
        local.append({"x_lo": float(x[i]), "x_hi": float(x[i + 1]), "slope": s_i,
                      "ci": [s_i - t * se_i, s_i + t * se_i]})  # fmt: skip
    return {
        "slope": slope,
        "se": se,
        "ci": [slope - t * se, slope + t * se],
        "r2": 1 - float(np.sum(resid**2)) / ss_tot if ss_tot > 0 else float("nan"),
        "n_seeds": int(n),
        "local": local,
    }


def select_and_score(scores, select, heldout, *, level: float = 0.95) -> dict:
    """Pick the setting with the best mean score on the ``select`` seeds; score it on ``heldout``.

    ``scores [n_settings, n_seeds]`` (higher is better); ``select``, ``heldout``: disjoint lists of
    seed columns. Returns ``{"best": index, "selection_mean": …, "heldout": mean_ci(…),
    "heldout_scores": [...]}``. The held-out score never enters the choice, so it is not inflated
    by the maximum over settings (the winner's curse of scoring on the seeds one chose with).
    """
    s = np.asarray(scores, float)
    select, heldout = list(select), list(heldout)
    if set(select) & set(heldout):
        raise ValueError(
            f"selection and held-out seeds overlap: {sorted(set(select) & set(heldout))}"
        )
    if not select or not heldout:
        raise ValueError("select_and_score needs non-empty selection and held-out seed sets")
    sel_means = s[:, select].mean(axis=1)
    best = int(np.argmax(sel_means))
    held = s[best, heldout]
    return {"best": best, "selection_mean": float(sel_means[best]),
            "heldout": mean_ci(held, level), "heldout_scores": held.tolist()}  # fmt: skip
