"""v5 §4.4's exact identities on hypothesis-drawn log-linear MDPs."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from toy.identities import martingale_sides, second_moments
from toy.loglinear import make_loglinear_mdp
from toy.mdp import init_theta

mdps = st.builds(
    make_loglinear_mdp,
    vocab=st.integers(2, 4),
    horizon=st.integers(1, 6),
    num_prompts=st.integers(1, 3),
    num_features=st.integers(2, 6),
    stop=st.sampled_from(["none", "hazard"]),
    rare_offset=st.sampled_from([0.0, 4.0]),
    seed=st.integers(0, 100),
)


@settings(max_examples=30, deadline=None)
@given(mdp=mdps, seed=st.integers(0, 1000), scale=st.floats(0.1, 2.0))
def test_property_4_1_martingale_identity(mdp, seed, scale):
    sides = martingale_sides(init_theta(mdp, scale, seed=seed), mdp)
    assert abs(sides["lhs"] - sides["rhs"]) <= 1e-10 * sides["rhs"]


@settings(max_examples=30, deadline=None)
@given(mdp=mdps, seed=st.integers(0, 1000), delta=st.floats(0.0, 4.0), eps=st.floats(0.0, 1.0))
def test_tic_second_moment_bound(mdp, seed, delta, eps):
    theta_old = init_theta(mdp, 0.7, seed=seed)
    u = init_theta(mdp, 1.0, seed=seed + 1)
    res = second_moments(theta_old + delta * u / u.norm(), theta_old, mdp, eps)
    assert res["Q_tic"] <= res["bound_tic"] * (1 + 1e-12)


@settings(max_examples=15, deadline=None)
@given(mdp=mdps, seed=st.integers(0, 1000))
def test_on_policy_every_second_moment_is_the_trajectory_score(mdp, seed):
    theta = init_theta(mdp, 0.7, seed=seed)
    res, sides = second_moments(theta, theta, mdp, 0.2), martingale_sides(theta, mdp)
    tol = 1e-10 * sides["lhs"] + 1e-300
    assert abs(res["Q_tic"] - sides["lhs"]) <= tol  # w' = 1 < 1 + ε
    assert abs(res["Q_grpo2"] - sides["lhs"]) <= tol  # every w_t = 1
    assert abs(res["bound_tic"] - 1.2 * sides["lhs"]) <= 1.2 * tol


def test_the_identity_is_not_trivial():
    """The cross terms cancel in expectation only: per sample they are large."""
    mdp = make_loglinear_mdp(vocab=3, horizon=5)
    sides = martingale_sides(init_theta(mdp, 0.5, seed=0), mdp)
    assert sides["abs_cross"] > 0.05 * sides["rhs"]
