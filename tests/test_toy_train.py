"""The toy loop: per-run gradients of the stacked batch, no-IS semantics, S logging, variants."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ticgrpo import policy_loss
from toy import variants
from toy.loglinear import make_loglinear_mdp
from toy.mdp import init_theta, make_mdp, policy_gradient, sampled_token_logp
from toy.train import TrainConfig, _ascent, train, train_steps


@pytest.mark.parametrize("method", ["dapo", "tic_grpo", "grpo2"])
def test_stacked_runs_get_their_own_gradient(method):
    mdp = make_loglinear_mdp(vocab=3, horizon=4, num_prompts=2, seed=1)
    theta = torch.stack([init_theta(mdp, 0.5, seed=s) for s in (0, 1)])  # [B=2, F, V]
    old = theta + 0.1
    gen = torch.Generator().manual_seed(0)
    prompts = torch.randint(2, (2, 2), generator=gen)  # [B, R]
    idx = torch.randint(mdp.num_responses, (2, 2, 3), generator=gen)  # [B, R, G]
    adv = torch.randn(12, dtype=torch.float64)
    cfg = TrainConfig(method=method).resolved(mdp.horizon)
    old_rows = sampled_token_logp(old, mdp, prompts, idx).reshape(12, -1)
    mask = mdp.mask[idx].reshape(12, -1)

    def rows_at(leaf):
        return sampled_token_logp(leaf, mdp, prompts, idx).reshape(12, -1)

    step, _ = _ascent(theta, rows_at, old_rows, mask, adv, cfg, cfg["core_method"], 6)
    for b in range(2):
        leaf = theta[b].clone().requires_grad_(True)
        rows = sampled_token_logp(leaf[None], mdp, prompts[b : b + 1], idx[b : b + 1])[0]
        loss = policy_loss(rows.reshape(6, -1), old_rows[6 * b : 6 * b + 6],
                           adv[6 * b : 6 * b + 6], mask[6 * b : 6 * b + 6],
                           method=cfg["core_method"], eps_low=cfg["eps_low"],
                           eps_high=cfg["eps_high"], max_len=mdp.horizon).loss  # fmt: skip
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


def test_no_is_with_minibatches_uses_theta_old_on_each_block():
    mdp = make_loglinear_mdp(vocab=3, horizon=4, num_prompts=3, seed=2)
    cfg = TrainConfig(method="no_is", inner_steps=3, prompts_per_step=1, lrs=(0.5,), seeds=(0,))
    _, path = train_steps(mdp, cfg)
    steps = path[1:] - path[:-1]
    assert not torch.allclose(steps[0], steps[1])  # different mini-batches
    pg = TrainConfig(method="pg", inner_steps=3, prompts_per_step=1, lrs=(0.5,), seeds=(0,))
    _, moved = train_steps(mdp, pg)  # pg re-evaluates at θ_k: differs after the first step
    assert torch.allclose(moved[1], path[1], atol=1e-14)
    assert not torch.allclose(moved[2], path[2])


def test_stationarity_is_k_times_grad_norm_when_nothing_moves():
    mdp = make_loglinear_mdp(vocab=3, horizon=4, seed=3)
    out = train(mdp, TrainConfig(method="tic_grpo", iterations=3, inner_steps=4, lrs=(0.0,),
                                 seeds=(0, 1), prompts_per_step=1, log_inner=True))  # fmt: skip
    theta0 = torch.stack([init_theta(mdp, 0.5, seed=s) for s in (0, 1)])
    expected = 4 * (policy_gradient(theta0, mdp) ** 2).sum(dim=(1, 2))
    assert np.allclose(out["S"], expected.numpy(), rtol=1e-12)
    assert len(out["M"]) == 3 and min(min(m) for m in out["M"]) >= 1.0


@pytest.mark.parametrize("method", ["grpo", "tic_grpo", "grpo2", "grpo_traj_is", "no_is"])
def test_training_improves_exact_objective(method):
    mdp = make_mdp(3, 2, 2, p_correct=0.3, seed=3)
    lr = 2.0 if method in ("tic_grpo", "grpo2") else 1.0  # the 1/T methods step 1/T per token
    out = train(mdp, TrainConfig(method=method, iterations=25, lrs=(lr,), seeds=(0, 1, 2)))
    j = np.asarray(out["J"])
    assert j.shape == (26, 3)
    assert j[-1].mean() > j[0].mean() + 0.1


def test_core_rows_match_their_v5_definitions():
    """grpo2 = token ratio, up-only truncation, (1/T)Σ_t; tic_grpo = (1/T)·(one term per trajectory)."""
    gen = torch.Generator().manual_seed(4)
    lp, old = torch.randn(6, 5, generator=gen), torch.randn(6, 5, generator=gen)
    lp.requires_grad_(True)
    adv = torch.randn(6, generator=gen)
    mask = torch.rand(6, 5, generator=gen) > 0.3
    mask[:, 0] = True
    assert variants.core_has_v5_rows()
    for name, reference, scale in (
        ("grpo2", {"method": "grpo", "clip": "upper_truncate",
                   "aggregation": "token_sum_over_constant"}, 1.0),
        ("tic_grpo", {"method": "tic_grpo", "aggregation": "seq_mean_token_mean"}, 1 / 5),
    ):  # fmt: skip
        got = policy_loss(lp, old, adv, mask, method=name, max_len=5).loss
        ref = scale * policy_loss(lp, old, adv, mask, max_len=5, **reference).loss
        assert torch.allclose(got, ref, atol=1e-6)


def test_unknown_variant_optimizer_and_minibatch_raise():
    mdp = make_mdp(2, 1, 1)
    with pytest.raises(ValueError, match="unknown variant"):
        train(mdp, TrainConfig(method="ppo"))
    with pytest.raises(ValueError, match="optimizer"):
        train(mdp, TrainConfig(optimizer="rmsprop", iterations=1))
    with pytest.raises(ValueError, match="prompts_per_step"):
        train(mdp, TrainConfig(prompts_per_step=0, iterations=1))
