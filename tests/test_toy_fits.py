"""analysis.fits: the exponent fit recovers a known exponent; selection never scores its own seeds."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.fits import fit_exponent, jackknife_loglog, select_and_score


@pytest.mark.parametrize("exponent", [-1.0, 0.5, 2.5])
def test_fit_exponent_recovers_a_known_exponent(exponent):
    rng = np.random.default_rng(0)
    x = np.array([2, 3, 4, 6, 8, 12, 16], float)
    y = 0.3 * x**exponent * np.exp(rng.normal(0, 0.2, size=(40, x.size)))  # [seeds, x]
    fit = fit_exponent(x, y)
    assert fit["ci"][0] < exponent < fit["ci"][1]
    assert abs(fit["slope"] - exponent) < 0.1
    assert fit["ci"][1] - fit["ci"][0] < 0.3


def test_fit_exponent_interval_reflects_seed_noise_not_misfit():
    x = np.array([1, 2, 4, 8], float)
    y = np.tile(x**1.0, (5, 1)) * np.array([[1.0], [1.0], [1.0], [1.0], [1.0]])
    fit = fit_exponent(x, y)
    assert fit["se"] < 1e-12  # identical seeds: no sampling noise at all
    kinked = np.tile(np.where(x < 3, x**2.0, 4 * x**0.0), (5, 1))
    fit = fit_exponent(x, kinked * np.linspace(0.9, 1.1, 5)[:, None])
    slopes = [s["slope"] for s in fit["local"]]
    assert slopes[0] == pytest.approx(2.0) and slopes[-1] == pytest.approx(0.0, abs=1e-12)
    assert fit["r2"] < 0.9  # the misfit shows in r2, not in the interval


def test_fit_exponent_rejects_bad_input():
    with pytest.raises(ValueError, match="positive"):
        fit_exponent([1, 2], [[1, 0], [1, 1], [1, 1]])
    with pytest.raises(ValueError, match=">= 3 seeds"):
        fit_exponent([1, 2], [[1, 2], [1, 2]])


def test_jackknife_loglog_covers_the_slope():
    rng = np.random.default_rng(1)
    unit = np.repeat(np.arange(12), 20)
    x = rng.uniform(0.01, 1, unit.size)
    y = x**1.5 * np.exp(rng.normal(0, 0.1, 12)[unit])
    fit = jackknife_loglog(x, y, unit)
    assert fit["ci"][0] < 1.5 < fit["ci"][1]


def test_selection_scores_held_out_seeds_only():
    """Selection seeds favour setting 0, held-out seeds setting 1; the score is setting 0's held-out
    mean. A version that chose on all seeds, or scored on the selection seeds, fails here."""
    select, heldout = [0, 1, 2, 3], [4, 5, 6, 7]
    scores = np.zeros((3, 8))
    scores[0, select], scores[0, heldout] = 1.0, 0.2
    scores[1, select], scores[1, heldout] = 0.5, 0.9
    scores[2] = 0.4
    res = select_and_score(scores, select, heldout)
    assert res["best"] == 0
    assert res["selection_mean"] == pytest.approx(1.0)
    assert res["heldout"]["mean"] == pytest.approx(0.2)
    assert res["heldout_scores"] == [0.2] * 4
    with pytest.raises(ValueError, match="overlap"):
        select_and_score(scores, [0, 1, 4], heldout)
