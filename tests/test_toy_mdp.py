"""The enumerated MDP, exact J / ∇J, compositions and conditional advantages (hand values)."""

from __future__ import annotations

import math

import pytest
import torch

from ticgrpo import group_advantages
from toy.exact import compositions, conditional_advantages, limit_advantages
from toy.mdp import (
    enumerate_responses,
    init_theta,
    make_mdp,
    objective,
    policy_gradient,
    response_probs,
    score_jacobian,
    token_logp,
)  # fmt: skip


def test_enumeration_counts_and_eos_padding():
    tokens, mask = enumerate_responses(3, 3, eos=False)
    assert tokens.shape == (27, 3) and bool(mask.all())
    tokens, mask = enumerate_responses(3, 3, eos=True)
    # lengths 1 (EOS first), 2 (x EOS), 3 (anything without an early stop): 1 + 2 + 2·2·3
    assert tokens.shape[0] == 1 + 2 + 12
    assert bool((tokens[~mask] == 0).all())


@pytest.mark.parametrize("table", ["prefix", "last_token"])
@pytest.mark.parametrize("eos", [False, True])
def test_response_probabilities_sum_to_one(table, eos):
    mdp = make_mdp(3, 3, 2, table=table, eos=eos, seed=1)
    probs = response_probs(init_theta(mdp, 1.0, seed=2, batch=3), mdp)  # [B, P, M]
    assert torch.allclose(probs.sum(-1), torch.ones(3, 2, dtype=torch.float64))
    assert bool((token_logp(init_theta(mdp), mdp)[:, ~mdp.mask] == 0).all())


def test_bandit_objective_and_gradient_by_hand():
    mdp = make_mdp(2, 1, 1, reward="graded", seed=4)
    theta = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    pi = torch.softmax(theta[0], 0)
    r = torch.zeros(2, dtype=torch.float64)
    r[mdp.tokens[:, 0]] = mdp.rewards[0]
    assert math.isclose(float(objective(theta, mdp)), float(pi @ r), rel_tol=1e-14)
    # ∂J/∂θ_a = π_a (r_a − J)
    assert torch.allclose(policy_gradient(theta, mdp)[0], pi * (r - pi @ r), atol=1e-15)


def test_score_jacobian_equals_autograd():
    mdp = make_mdp(3, 2, 2, eos=True, seed=3)
    theta = init_theta(mdp, 1.0, seed=5)
    jac = score_jacobian(theta, mdp)  # [P, M, T, D]
    auto = torch.autograd.functional.jacobian(lambda th: token_logp(th, mdp), theta)
    assert torch.allclose(jac, auto.reshape(jac.shape), atol=1e-14)


def test_compositions_are_all_and_only_the_sums():
    c = compositions(5, 3)
    assert c.shape == (math.comb(7, 2), 3)
    assert bool((c.sum(1) == 5).all()) and bool((c >= 0).all())
    assert len({tuple(r) for r in c.tolist()}) == c.shape[0]


def test_conditional_advantages_by_hand_g2_binary():
    """G=2, binary: A_1 = ±1/(std([1,0]) + δ) when the rewards differ, else 0."""
    mdp = make_mdp(2, 1, 1, reward="binary", p_correct=0.5, seed=2)
    assert sorted(mdp.rewards[0].tolist()) == [0.0, 1.0]
    theta = torch.tensor([[0.4, -0.1]], dtype=torch.float64)
    probs = response_probs(theta, mdp)
    a_plus, a_minus = conditional_advantages(mdp, probs, 2, "std")
    a = float(group_advantages(torch.tensor([1.0, 0.0], dtype=torch.float64), 2)[0])
    win = int(mdp.rewards[0].argmax())
    lose = 1 - win
    assert math.isclose(float(a_plus[0, win]), float(probs[0, lose]) * a, rel_tol=1e-12)
    assert math.isclose(float(a_minus[0, lose]), float(probs[0, win]) * a, rel_tol=1e-12)
    assert float(a_minus[0, win]) == 0 and float(a_plus[0, lose]) == 0


def test_limit_advantages_std_is_standardised():
    mdp = make_mdp(3, 2, 2, reward="graded", seed=2)
    probs = response_probs(init_theta(mdp, 1.0, seed=1), mdp)
    a = limit_advantages(mdp, probs, "std")
    assert torch.allclose((probs * a).sum(1), torch.zeros(2, dtype=torch.float64), atol=1e-14)
    assert torch.allclose((probs * a**2).sum(1), torch.ones(2, dtype=torch.float64))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="reward kind"):
        make_mdp(reward="sparse")
    with pytest.raises(ValueError, match="table"):
        make_mdp(table="tree")
    with pytest.raises(ValueError, match="too many"):
        make_mdp(vocab=50, horizon=4)
