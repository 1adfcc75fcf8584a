"""The toy loop: per-run gradients of the stacked batch, no-IS semantics, learning happens."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ticgrpo import policy_loss
from toy.mdp import init_theta, make_mdp, token_logp
from toy.train import TrainConfig, _ascent, _gather, train, train_steps


def test_stacked_runs_get_their_own_gradient():
    mdp = make_mdp(3, 2, 2, seed=1)
    theta = torch.stack([init_theta(mdp, 0.5, seed=s) for s in (0, 1)])  # [B=2, S, V]
    old = theta + 0.1
    idx = torch.randint(mdp.num_responses, (2, 2, 3), generator=torch.Generator().manual_seed(0))
    adv = torch.randn(12, dtype=torch.float64)
    cfg = TrainConfig(method="dapo").resolved()
    old_rows = _gather(token_logp(old, mdp), idx)
    step, _ = _ascent(theta, old_rows, idx, adv, mdp, cfg, "dapo")
    for b in range(2):
        leaf = theta[b].clone().requires_grad_(True)
        rows = _gather(token_logp(leaf, mdp)[None], idx[b : b + 1])
        mask = mdp.mask[idx[b]].reshape(rows.shape)
        loss = policy_loss(rows, old_rows[6 * b : 6 * b + 6], adv[6 * b : 6 * b + 6], mask,
                           method="dapo", eps_low=0.2, eps_high=0.28).loss  # fmt: skip
        (grad,) = torch.autograd.grad(loss, leaf)
        assert torch.allclose(step[b], -grad, atol=1e-14)


def test_no_is_with_sga_is_one_step_of_size_k_eta():
    mdp = make_mdp(3, 2, 2, seed=2)
    cfg = TrainConfig(method="no_is", inner_steps=4, lrs=(0.3,), seeds=(0,), group_size=4)
    theta0, path = train_steps(mdp, cfg)
    steps = path[1:] - path[:-1]  # [K, B, S, V]: identical steps
    assert torch.allclose(steps, steps[:1].expand_as(steps), atol=1e-14)
    pg = TrainConfig(method="pg", inner_steps=1, lrs=(1.2,), seeds=(0,), group_size=4)
    _, one = train_steps(mdp, pg)  # same seed → same rollout, one step of 4·0.3 at θ_old
    assert torch.allclose(one[1], path[-1], atol=1e-12)


@pytest.mark.parametrize("method", ["grpo", "tic_grpo", "no_is"])
def test_training_improves_exact_objective(method):
    mdp = make_mdp(3, 2, 2, p_correct=0.3, seed=3)
    out = train(mdp, TrainConfig(method=method, iterations=25, lrs=(1.0,), seeds=(0, 1, 2)))
    j = np.asarray(out["J"])
    assert j.shape == (26, 3)
    assert j[-1].mean() > j[0].mean() + 0.1


def test_unknown_method_and_optimizer_raise():
    mdp = make_mdp(2, 1, 1)
    with pytest.raises(ValueError, match="unknown method"):
        train(mdp, TrainConfig(method="ppo"))
    with pytest.raises(ValueError, match="optimizer"):
        train(mdp, TrainConfig(optimizer="rmsprop", iterations=1))
