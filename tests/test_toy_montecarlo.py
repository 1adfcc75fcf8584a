"""Monte Carlo updates: fast assembly equals autograd; means agree with exact values within k SE."""

from __future__ import annotations

import pytest
import torch

from ticgrpo import group_advantages, policy_loss
from toy.exact import expected_update
from toy.mdp import init_theta, make_mdp, response_probs, token_logp
from toy.montecarlo import batch_updates, mc_updates, mean_and_se, sample_batches


@pytest.mark.parametrize("method,mode", [("grpo", "std"), ("dapo", "mean"), ("tic_grpo", "rloo")])
def test_batch_updates_equal_autograd_through_policy_loss(method, mode):
    mdp = make_mdp(3, 3, 2, eos=True, seed=2)
    old = init_theta(mdp, 0.6, seed=1)
    theta = old + 0.3 * init_theta(mdp, 1.0, seed=2)
    idx = sample_batches(response_probs(old, mdp), 3, 4, torch.Generator().manual_seed(0))
    fast = batch_updates(theta, old, mdp, method, idx, adv_mode=mode)  # [3, D]
    for b in range(3):
        leaf = theta.clone().requires_grad_(True)
        prompts = torch.arange(2)[:, None].expand(2, 4)
        rows = idx[b]
        lp = token_logp(leaf, mdp)[prompts, rows].reshape(8, -1)
        old_lp = token_logp(old, mdp)[prompts, rows].reshape(8, -1)
        adv = group_advantages(mdp.rewards[prompts, rows].reshape(-1), 4, mode=mode)
        mask = mdp.mask[rows].reshape(8, -1)
        loss = policy_loss(lp, old_lp, adv, mask, method=method, max_len=mdp.horizon).loss
        (grad,) = torch.autograd.grad(loss, leaf)
        assert torch.allclose(fast[b], -grad.reshape(-1), atol=1e-14)


@pytest.mark.parametrize("method,mode,g", [("grpo", "std", 4), ("tic_grpo", "none", 1),
                                           ("gspo", "rloo", 3)])  # fmt: skip
def test_monte_carlo_mean_within_k_standard_errors_of_exact(method, mode, g):
    mdp = make_mdp(3, 2, 2, reward="graded", seed=4)
    old = init_theta(mdp, 0.6, seed=1)
    theta = old + 0.4 * init_theta(mdp, 1.0, seed=3)
    opts = {"eps_low": 0.2, "eps_high": 0.2}
    exact = expected_update(theta, old, mdp, method, adv_mode=mode, group_size=g, **opts)
    samples = mc_updates(theta, old, mdp, method, group_size=g, num_batches=20_000, seed=7,
                         adv_mode=mode, **opts)  # fmt: skip
    mean, se = mean_and_se(samples)
    live = se > 1e-12  # entries of states never visited have zero gradient exactly
    z = (mean - exact.reshape(-1))[live] / se[live]
    # ~20–40 entries; |z| > 5 has probability < 1e-5 per entry under the CLT
    assert float(z.abs().max()) < 5.0
    assert torch.allclose(mean[~live], exact.reshape(-1)[~live], atol=1e-12)
