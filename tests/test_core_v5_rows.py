"""The v5 rows (grpo2, grpo_traj_is), TIC-GRPO's 1/T, and the required length budget ``max_len``."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_core_loss import BUDGET, batch, grad_of
from ticgrpo import METHODS, aggregate, policy_loss, surrogate, token_log_ratio

F64 = torch.float64


# ---------------------------------------------------------------- the rows


def test_rows_name_their_v5_equation():
    assert "v5 Eq. 8" in METHODS["tic_grpo"].paper
    assert "v5 Eq. 14" in METHODS["grpo2"].paper and "UB_Clip" in METHODS["grpo2"].paper
    assert "v5 Table 2" in METHODS["grpo_traj_is"].paper
    assert "Traj_IS" in METHODS["grpo_traj_is"].paper
    assert "v5 Eq. 4" in METHODS["grpo"].paper


def test_no_is_is_a_loop_option_not_a_row():
    # the trainer and the toy lab run the ablation as `no_is` (pg gradient at θ_old, reused)
    assert "no_is" not in METHODS


def test_budget_rows_are_exactly_the_ones_dividing_by_T():
    assert {m for m, row in METHODS.items() if row.needs_max_len} == {
        "tic_grpo",
        "grpo2",
        "dr_grpo",
    }


# ---------------------------------------------------------------- hand values


def test_hand_values_grpo2():
    """v5 Eq. 14: (1/T)·mean_i Σ_t min(w_{i,t}, 1+ε_high)·A_i, for either sign of A."""
    old = torch.zeros(2, 3, dtype=F64)
    # row 0: ρ = (0.5, −0.5, ·) with A = −1: the up-only clip binds on token 0 even though A < 0
    # row 1: ρ = (0.1, ·, ·) with A = 2
    logp = torch.tensor([[0.5, -0.5, 7.0], [0.1, 3.0, 3.0]], dtype=F64, requires_grad=True)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    adv = torch.tensor([-1.0, 2.0], dtype=F64)
    out = policy_loss(logp, old, adv, mask, method="grpo2", max_len=4)
    objective = (-(1.2 + math.exp(-0.5)) + 2 * math.exp(0.1)) / (2 * 4)
    assert out.loss.item() == pytest.approx(-objective, rel=1e-12)
    g = grad_of(out.loss, logp)
    # ∂(−objective)/∂ρ: 0 where truncated, −A·w/(N·T) elsewhere, 0 on masked positions
    expected = torch.tensor(
        [[0.0, math.exp(-0.5) / 8, 0.0], [-2 * math.exp(0.1) / 8, 0.0, 0.0]], dtype=F64
    )
    assert torch.allclose(g, expected, rtol=1e-12)
    assert out.metrics["clip_ratio/high"] == pytest.approx(1 / 3)
    # GRPO keeps the unclipped w·A for that negative-advantage token (min(wA, 1.2·A) = wA) and
    # clips the low one from below (min(wA, 0.8·A) = −0.8)
    grpo = policy_loss(logp, old, adv, mask, method="grpo")
    assert grpo.loss.item() == pytest.approx(
        -((-(math.exp(0.5) + 0.8) / 2 + 2 * math.exp(0.1)) / 2), rel=1e-12
    )


def test_hand_values_grpo_traj_is():
    """v5 Table 2 'GRPO+Traj_IS': min(w'A, clip(w', 1−ε_low, 1+ε_high)A), sign-aware, 1/L_i."""
    old = torch.zeros(3, 2, dtype=F64)
    logp = torch.tensor([[0.2, 0.2], [0.2, 0.2], [-0.3, -0.3]], dtype=F64, requires_grad=True)
    mask = torch.ones(3, 2, dtype=torch.bool)
    adv = torch.tensor([1.0, -1.0, -1.0], dtype=F64)
    out = policy_loss(logp, old, adv, mask, method="grpo_traj_is")
    # w' = e^0.4 = 1.49 > 1.2: A > 0 clipped to 1.2; A < 0 keeps −w' (pessimistic, unclipped);
    # w' = e^-0.6 = 0.55 < 0.8 with A < 0: clipped to −0.8
    objective = (1.2 - math.exp(0.4) - 0.8) / 3
    assert out.loss.item() == pytest.approx(-objective, rel=1e-12)
    g = grad_of(out.loss, logp)
    assert torch.equal(g[0], torch.zeros(2, dtype=F64))
    assert g[1].tolist() == pytest.approx([math.exp(0.4) / 3] * 2)  # w'·Σ_t ∇ρ, no 1/L_i left
    assert torch.equal(g[2], torch.zeros(2, dtype=F64))
    # TIC-GRPO truncates the A < 0, w' > 1+ε row instead (up-only clip for either sign), and /T
    tic = policy_loss(logp, old, adv, mask, method="tic_grpo", max_len=2)
    assert tic.loss.item() == pytest.approx(-(1.2 - 1.2 - math.exp(-0.6)) / 3 / 2, rel=1e-12)


def test_grpo_traj_is_one_over_length_cancels():
    """(1/L_i) Σ_t of L_i equal terms: the row's value is mean_i of one term per trajectory."""
    logp, old, adv, mask = batch(seed=11)
    out = policy_loss(logp, old, adv, mask, method="grpo_traj_is")
    w = torch.where(mask, logp - old, 0).sum(1).exp()
    ell = torch.minimum(w * adv, w.clamp(0.8, 1.2) * adv)
    assert out.loss.item() == pytest.approx(-ell.mean().item(), rel=1e-12)
    assert torch.allclose(out.per_seq, ell.detach())


def test_tic_grpo_carries_one_over_T_and_the_earlier_reading_does_not():
    logp, old, adv, mask = batch(seed=12)
    new = policy_loss(logp, old, adv, mask, method="tic_grpo", max_len=BUDGET)
    earlier = policy_loss(
        logp, old, adv, mask, method="tic_grpo", aggregation="seq_mean_token_mean"
    )
    assert new.loss.item() == pytest.approx(earlier.loss.item() / BUDGET, rel=1e-12)
    assert torch.allclose(grad_of(new.loss, logp) * BUDGET, grad_of(earlier.loss, logp))
    assert torch.equal(new.per_seq, earlier.per_seq)  # ℓ_i, before any batch normaliser


# ---------------------------------------------------------------- grpo2 vs grpo


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    scale=st.sampled_from([0.1, 0.3, 1.0]),
    eps=st.sampled_from([(0.2, 0.2), (0.2, 0.28), (0.1, 0.5)]),
)
def test_grpo2_and_grpo_token_terms_differ_exactly_outside_the_band(seed, scale, eps):
    """Per token: equal inside [1−ε_low, 1+ε_high]; outside it they differ exactly when A < 0
    (for A > 0 both clips give (1+ε_high)A above the band and wA below it)."""
    eps_low, eps_high = eps
    logp, old, adv, mask = batch(n=8, t=6, seed=seed, scale=scale)
    rho = token_log_ratio(logp.detach(), old, mask)
    w = rho.exp()
    a = adv[:, None].expand_as(rho)
    grpo, grpo2 = METHODS["grpo"], METHODS["grpo2"]
    assert grpo.ratio == grpo2.ratio == "token"
    t1, *_ = surrogate(rho, adv[:, None], grpo.clip, eps_low, eps_high, 20.0)
    t2, *_ = surrogate(rho, adv[:, None], grpo2.clip, eps_low, eps_high, 20.0)
    outside = (w < 1 - eps_low) | (w > 1 + eps_high)
    expected_diff = outside & (a < 0) & mask
    assert torch.equal((t1 != t2) & mask, expected_diff)
    # the same set through policy_loss's gradients, with the aggregation held equal
    opts = dict(eps_low=eps_low, eps_high=eps_high, aggregation="token_sum_over_constant")
    g1 = grad_of(policy_loss(logp, old, adv, mask, method="grpo", max_len=6, **opts).loss, logp)
    g2 = grad_of(policy_loss(logp, old, adv, mask, method="grpo2", max_len=6, **opts).loss, logp)
    assert torch.equal((g1 != g2) & mask, expected_diff)


def test_grpo2_and_tic_grpo_coincide_for_one_token():
    """T = 1: the token ratio is the trajectory ratio and Σ_t has one term."""
    logp, old, adv, _ = batch(n=6, t=1, seed=2, scale=0.5)
    mask = torch.ones(6, 1, dtype=torch.bool)
    a = policy_loss(logp, old, adv, mask, method="grpo2", max_len=1)
    b = policy_loss(logp, old, adv, mask, method="tic_grpo", max_len=1)
    assert a.loss.item() == pytest.approx(b.loss.item(), rel=1e-12)
    assert torch.allclose(grad_of(a.loss, logp), grad_of(b.loss, logp), rtol=1e-12)


# ---------------------------------------------------------------- max_len is required


@pytest.mark.parametrize("method", sorted(m for m, row in METHODS.items() if row.needs_max_len))
def test_missing_max_len_is_a_clear_error(method):
    logp, old, adv, mask = batch()
    with pytest.raises(ValueError, match=rf"method='{method}'.*pass max_len"):
        policy_loss(logp, old, adv, mask, method=method)


@pytest.mark.parametrize(
    "aggregation", ["token_sum_over_constant", "seq_mean_token_mean_over_constant"]
)
def test_missing_max_len_with_an_overridden_aggregation(aggregation):
    logp, old, adv, mask = batch()
    with pytest.raises(ValueError, match="max_len"):
        policy_loss(logp, old, adv, mask, method="grpo", aggregation=aggregation)
    with pytest.raises(ValueError, match="never read from the padded width"):
        aggregate(torch.ones(2, 3), torch.ones(2, 3, dtype=torch.bool), aggregation)


@pytest.mark.parametrize("method", sorted(m for m, row in METHODS.items() if not row.needs_max_len))
def test_other_methods_do_not_need_max_len(method):
    logp, old, adv, mask = batch()
    out = policy_loss(logp, old, adv, mask, method=method)
    assert torch.isfinite(out.loss)


def test_max_len_shorter_than_a_response_is_an_error():
    logp, old, adv, mask = batch()  # mask[:, 0] is True; some row is longer than 1 token
    longest = int(mask.sum(1).max())
    with pytest.raises(ValueError, match=rf"shorter than the longest response.*{longest} tokens"):
        policy_loss(logp, old, adv, mask, method="tic_grpo", max_len=longest - 1)
    with pytest.raises(ValueError, match="max_len must be > 0"):
        policy_loss(logp, old, adv, mask, method="grpo2", max_len=0)
    policy_loss(logp, old, adv, mask, method="grpo2", max_len=longest)  # the budget may be tight
