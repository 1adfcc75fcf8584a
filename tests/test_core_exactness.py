"""Issue 2's exactness identities on enumerated MDPs (float64), with hypothesis-drawn MDPs.

- TIC-GRPO (no clip, advantages independent of the other samples) equals ∇J(θ)/T at θ far from
  θ_old (v5 Eq. 8 carries the constant 1/T), and GRPO+Traj_IS (no clip) equals ∇J(θ); GRPO is
  not unbiased.
- At θ = θ_old every method equals the score-function gradient times its normaliser (GRPO₂ and
  TIC-GRPO: 1/T).
- T = 1 (bandit): GRPO and TIC-GRPO coincide.
- The homogeneity trick of toy.exact equals brute-force enumeration of whole batches.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ticgrpo import policy_loss
from toy.exact import expected_update, expected_update_bruteforce, score_function_gradient
from toy.mdp import init_theta, make_mdp, policy_gradient

SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mdps(draw, min_horizon=1, eos=None):
    vocab = draw(st.integers(2, 3))
    horizon = draw(st.integers(min_horizon, 3))
    return make_mdp(
        vocab, horizon, draw(st.integers(1, 2)),
        table=draw(st.sampled_from(["prefix", "last_token"])),
        reward=draw(st.sampled_from(["binary", "graded", "dense"])),
        eos=draw(st.booleans()) if eos is None else eos,
        seed=draw(st.integers(0, 10_000)),
    )  # fmt: skip


def thetas(mdp, seed, distance):
    old = init_theta(mdp, 0.8, seed=seed)
    step = init_theta(mdp, 1.0, seed=seed + 1)
    return old, old + distance * step / step.norm()


def rel(a, b):
    return float((a - b).norm() / b.norm())


@SETTINGS
@given(mdps(), st.integers(0, 1000), st.floats(0.5, 4.0))
def test_tic_grpo_unbiased_for_current_gradient(mdp, seed, distance):
    """v5 Eq. 8 unclipped: E_old[(1/T) w' A Σ_t ∇log π_θ] = ∇J(θ)/T; the earlier reading
    (no 1/T) and GRPO+Traj_IS unclipped (its 1/L_i cancels) are ∇J(θ) itself."""
    old, theta = thetas(mdp, seed, distance)
    grad = policy_gradient(theta, mdp)
    atol = 1e-12 * max(1.0, float(grad.abs().max()))
    upd = expected_update(theta, old, mdp, "tic_grpo", clip="none")
    assert torch.allclose(upd, grad / mdp.horizon, rtol=1e-8, atol=atol / mdp.horizon)
    earlier = expected_update(
        theta, old, mdp, "tic_grpo", clip="none", aggregation="seq_mean_token_mean"
    )
    assert torch.allclose(earlier, grad, rtol=1e-8, atol=atol)
    traj_is = expected_update(theta, old, mdp, "grpo_traj_is", clip="none")
    assert torch.allclose(traj_is, grad, rtol=1e-8, atol=atol)


@SETTINGS
@given(st.integers(2, 3), st.integers(1, 2), st.sampled_from(["prefix", "last_token"]),
       st.integers(0, 10_000), st.integers(0, 1000))  # fmt: skip
def test_grpo_not_unbiased_far_from_old(horizon, prompts, table, mdp_seed, seed):
    # graded rewards over V=3 depend on every token (a reward that ignores later tokens would
    # make GRPO's token ratios harmless, a legitimate but uninformative case)
    mdp = make_mdp(3, horizon, prompts, table=table, reward="graded", seed=mdp_seed)
    old, theta = thetas(mdp, seed, 2.0)
    grad = policy_gradient(theta, mdp)
    if grad.norm() < 1e-6:
        return  # a flat objective has nothing to be biased about
    upd = expected_update(theta, old, mdp, "grpo", clip="none") * mdp.horizon  # κ = 1/T
    tic = expected_update(theta, old, mdp, "tic_grpo", clip="none") * mdp.horizon  # 1/T
    assert rel(upd, grad) > 1e3 * max(rel(tic, grad), 1e-14)
    assert rel(upd, grad) > 1e-3


def _per_response(mdp, kind):
    lengths = mdp.lengths
    return {"inv_len": 1 / lengths, "one": torch.ones_like(lengths),
            "inv_T": torch.full_like(lengths, 1 / mdp.horizon)}[kind]  # fmt: skip


# method -> per-response normaliser of its on-policy gradient E[A · c · Σ_t ∇log π]
NORMALISERS = {"grpo": "inv_len", "gspo": "inv_len", "pg": "inv_len", "tic_grpo": "inv_T",
               "grpo2": "inv_T", "grpo_traj_is": "one", "dr_grpo": "inv_T"}  # fmt: skip


def test_every_method_has_an_on_policy_normaliser():
    from ticgrpo import METHODS

    assert set(NORMALISERS) | {"dapo"} == set(METHODS)


@SETTINGS
@given(mdps(), st.integers(0, 1000), st.sampled_from(sorted(NORMALISERS)))
def test_on_policy_every_method_is_scaled_score_gradient(mdp, seed, method):
    theta = init_theta(mdp, 0.8, seed=seed)
    upd = expected_update(theta, theta, mdp, method)
    ref = score_function_gradient(theta, mdp, mdp.rewards, _per_response(mdp, NORMALISERS[method]))
    assert torch.allclose(upd, ref, rtol=1e-9, atol=1e-13)


@SETTINGS
@given(mdps(), st.integers(0, 1000), st.sampled_from(["grpo2", "tic_grpo"]))
def test_on_policy_grpo2_and_tic_are_score_gradient_over_T(mdp, seed, method):
    """v5 Eq. 14 and Eq. 8 at θ = θ_old: every ratio is 1, the update is (1/T)·E[A Σ_t ∇log π]."""
    theta = init_theta(mdp, 0.8, seed=seed)
    upd = expected_update(theta, theta, mdp, method)
    ref = score_function_gradient(theta, mdp, mdp.rewards, _per_response(mdp, "inv_T"))
    assert torch.allclose(upd, ref, rtol=1e-9, atol=1e-13)
    grad = policy_gradient(theta, mdp)  # advantages = rewards: the score gradient is ∇J
    assert torch.allclose(upd * mdp.horizon, grad, rtol=1e-8, atol=1e-12)


@SETTINGS
@given(mdps(eos=False), st.integers(0, 1000))
def test_on_policy_dapo_fixed_length_is_score_gradient_over_T(mdp, seed):
    theta = init_theta(mdp, 0.8, seed=seed)
    upd = expected_update(theta, theta, mdp, "dapo")
    ref = score_function_gradient(theta, mdp, mdp.rewards, _per_response(mdp, "inv_T"))
    assert torch.allclose(upd, ref, rtol=1e-9, atol=1e-13)


def test_on_policy_dapo_variable_length_is_ratio_of_sums():
    """DAPO with EOS: E[Σ_i A_i Σ_t ∇log π / Σ_i L_i] over a batch of 2 — not a per-sequence mean."""
    mdp = make_mdp(2, 3, 1, eos=True, reward="graded", seed=3)
    theta = init_theta(mdp, 0.8, seed=1)
    upd = expected_update_bruteforce(theta, theta, mdp, "dapo", group_size=2)
    leaf = theta.clone().requires_grad_(True)
    from toy.mdp import response_probs, token_logp

    lp = token_logp(leaf, mdp)[0].sum(1)  # [M]
    p = response_probs(theta, mdp)[0]
    r, length = mdp.rewards[0], mdp.lengths
    total = sum(p[i] * p[j] * (r[i] * lp[i] + r[j] * lp[j]) / (length[i] + length[j])
                for i in range(len(p)) for j in range(len(p)))  # fmt: skip
    (ref,) = torch.autograd.grad(total, leaf)
    assert torch.allclose(upd, ref, rtol=1e-10, atol=1e-14)
    with pytest.raises(ValueError, match="token_mean"):
        expected_update(theta, theta, mdp, "dapo")


@SETTINGS
@given(mdps(min_horizon=1, eos=False).filter(lambda m: m.horizon == 1) | st.builds(
    lambda s, v: make_mdp(v, 1, 2, reward="graded", seed=s), st.integers(0, 999), st.integers(2, 5)),
    st.integers(0, 1000), st.sampled_from(["none", "two_sided", "upper_truncate"]))  # fmt: skip
def test_bandit_grpo_and_tic_grpo_coincide(mdp, seed, clip):
    old, theta = thetas(mdp, seed, 1.5)
    a = expected_update(theta, old, mdp, "grpo", clip=clip)
    b = expected_update(theta, old, mdp, "tic_grpo", clip=clip)
    assert torch.allclose(a, b, rtol=1e-12, atol=1e-15)
    # and per sample: the losses and gradients of any batch agree
    gen = torch.Generator().manual_seed(seed)
    lp = torch.randn(6, 1, generator=gen, dtype=torch.float64).requires_grad_(True)
    args = (torch.randn(6, 1, generator=gen, dtype=torch.float64),
            torch.randn(6, generator=gen, dtype=torch.float64), torch.ones(6, 1, dtype=torch.bool))  # fmt: skip
    la = policy_loss(lp, *args, method="grpo", clip=clip).loss
    lb = policy_loss(lp, *args, method="tic_grpo", clip=clip, max_len=1).loss  # T = 1
    assert torch.allclose(la, lb)
    assert torch.allclose(*(torch.autograd.grad(x, lp)[0] for x in (la, lb)))


@pytest.mark.parametrize("method,opts", [("grpo", {}), ("tic_grpo", {}), ("tic_grpo", {"tic_clip": "ppo"}),
                                         ("gspo", {"eps_low": 0.2, "eps_high": 0.2}), ("dr_grpo", {}),
                                         ("grpo2", {}), ("grpo_traj_is", {})])  # fmt: skip
@pytest.mark.parametrize("mode,g", [("none", 1), ("std", 2), ("rloo", 3), ("length_corrected", 2)])
def test_homogeneity_trick_equals_bruteforce(method, opts, mode, g):
    mdp = make_mdp(2, 2, 1, eos=True, reward="graded", seed=5)
    old, theta = thetas(mdp, 7, 1.2)
    fast = expected_update(theta, old, mdp, method, adv_mode=mode, group_size=g, **opts)
    naive = expected_update_bruteforce(theta, old, mdp, method, adv_mode=mode, group_size=g, **opts)
    assert torch.allclose(fast, naive, rtol=1e-10, atol=1e-14)


def test_homogeneity_trick_hand_example():
    """Bandit V=2, one prompt: E[g] for TIC-GRPO unclipped = Σ_a π_old(a) w(a) r(a) ∇log π_θ(a)."""
    mdp = make_mdp(2, 1, 1, reward="graded", seed=0)
    old = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    theta = torch.tensor([[0.5, -0.5]], dtype=torch.float64)
    pi = torch.softmax(theta[0], 0)
    r = mdp.rewards[0, mdp.tokens[:, 0].argsort()]
    # ∇ log π(a) = e_a − π; π_old = 1/2; w(a) = π(a)/(1/2)
    expected = sum(0.5 * (pi[a] / 0.5) * r[a] * (torch.eye(2)[a].double() - pi) for a in range(2))
    upd = expected_update(theta, old, mdp, "tic_grpo", clip="none")  # T = 1: 1/T is 1
    assert torch.allclose(upd[0], expected, atol=1e-15)
