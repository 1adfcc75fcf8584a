"""Log-linear MDPs with a stop token: enumeration, dials, analytic gradients and scores."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from toy.loglinear import length_variance, make_loglinear_mdp, score_tokens
from toy.mdp import (
    init_theta,
    policy_gradient,
    policy_gradient_autograd,
    response_probs,
    token_logp,
)

mdps = st.builds(
    make_loglinear_mdp,
    vocab=st.integers(2, 4),
    horizon=st.integers(1, 5),
    num_prompts=st.integers(1, 3),
    num_features=st.integers(2, 5),
    stop=st.sampled_from(["none", "hazard"]),
    rare_offset=st.sampled_from([0.0, 3.0]),
    seed=st.integers(0, 50),
)


@settings(max_examples=25, deadline=None)
@given(mdp=mdps, seed=st.integers(0, 100))
def test_probabilities_sum_to_one_and_gradient_matches_autograd(mdp, seed):
    theta = init_theta(mdp, 0.8, seed=seed, batch=2)
    assert torch.allclose(response_probs(theta, mdp).sum(-1), torch.ones(2, mdp.num_prompts, dtype=torch.float64),
                          atol=1e-12)  # fmt: skip
    assert torch.allclose(policy_gradient(theta, mdp), policy_gradient_autograd(theta, mdp),
                          atol=1e-13)  # fmt: skip


@settings(max_examples=15, deadline=None)
@given(mdp=mdps, seed=st.integers(0, 100))
def test_analytic_token_scores_match_autograd(mdp, seed):
    theta = init_theta(mdp, 0.8, seed=seed)
    score = score_tokens(theta, mdp)  # [P, M, T, F·V]
    leaf = theta.clone().requires_grad_(True)
    lp = token_logp(leaf, mdp)
    p, m, t = 0, mdp.num_responses - 1, 0
    (grad,) = torch.autograd.grad(lp[p, m, t], leaf)
    assert torch.allclose(score[p, m, t], grad.reshape(-1), atol=1e-13)


def test_stop_rules_lengths_and_rewards():
    mdp = make_loglinear_mdp(vocab=3, horizon=8, stop="hazard")
    lengths = mdp.lengths
    assert lengths.min() == 2 and lengths.max() == 8  # stop allowed from position 1
    # t non-stop tokens then the stop (t = 1 … 7), or 8 non-stop tokens
    assert mdp.num_responses == sum(2**t for t in range(1, 8)) + 2**8
    assert set(torch.unique(mdp.rewards).tolist()) <= {0.0, 0.25, 0.5, 0.75, 1.0}
    ended = mdp.tokens[mdp.lengths < 8]
    assert (ended[torch.arange(len(ended)), (mdp.lengths[mdp.lengths < 8] - 1).long()] == 0).all()


@pytest.mark.parametrize("spread", [0, 1, 2, 3])
def test_two_point_lengths_dial_sigma2(spread):
    mdp = make_loglinear_mdp(vocab=3, horizon=8, stop="two_point", spread=spread)
    assert set(mdp.lengths.tolist()) == {4.0 - spread, 4.0 + spread}
    theta = init_theta(mdp, 0.0, seed=0)  # θ = 0: only the offsets act
    assert abs(float(length_variance(theta, mdp)) - spread**2) < 1e-9


def test_rare_token_probability_follows_its_offset():
    mdp = make_loglinear_mdp(vocab=4, horizon=4, stop="none", rare_offset=5.0)
    probs = mdp.token_probs_table(torch.zeros(mdp.shape, dtype=torch.float64))
    # stop="none": two ordinary tokens of logit 0 beside the rare one
    expected = torch.exp(torch.tensor(-5.0)) / (2 + torch.exp(torch.tensor(-5.0)))
    assert torch.allclose(probs[:, 3], expected.to(probs.dtype).expand(probs.shape[0]))
    assert (mdp.targets == 3).any()  # the rare token carries reward somewhere


def test_budgets_share_features_and_targets():
    short, long = (make_loglinear_mdp(vocab=3, horizon=t, seed=5) for t in (4, 6))
    assert torch.equal(short.targets, long.targets[:, :4])
    f_short = short.features.view(short.num_prompts, 4, 4, -1)
    f_long = long.features.view(long.num_prompts, 6, 4, -1)
    assert torch.equal(f_short, f_long[:, :4])


def test_invalid_arguments_name_the_problem():
    with pytest.raises(ValueError, match="two_point needs an even T"):
        make_loglinear_mdp(horizon=7, stop="two_point")
    with pytest.raises(ValueError, match="unknown stop rule"):
        make_loglinear_mdp(stop="sometimes")
    with pytest.raises(ValueError, match="num_features"):
        make_loglinear_mdp(num_features=1)
