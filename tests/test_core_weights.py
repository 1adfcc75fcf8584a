"""``token_weights``: constants multiplying each policy token term before aggregation."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.naive import naive_objective
from tests.test_core_loss import BUDGET, NAIVE_METHODS, batch, grad_of
from ticgrpo import METHODS, policy_loss

F64 = torch.float64


def weights_for(mask, seed, low=0.0, high=2.0):
    g = torch.Generator().manual_seed(seed + 1)
    return low + (high - low) * torch.rand(mask.shape, generator=g, dtype=F64)


# ---------------------------------------------------------------- against the naive loop


@settings(max_examples=40, deadline=None)
@given(
    method=st.sampled_from(NAIVE_METHODS),
    seed=st.integers(0, 10_000),
    scale=st.sampled_from([0.05, 0.3, 1.0]),
)
def test_weighted_matches_naive_loop_value_and_gradient(method, seed, scale):
    logp, old, adv, mask = batch(seed=seed, scale=scale)
    c = weights_for(mask, seed)
    fast = policy_loss(logp, old, adv, mask, method=method, max_len=BUDGET, token_weights=c)
    slow = -naive_objective(logp, old, adv, mask, method, max_len=BUDGET, token_weights=c)
    assert fast.loss.item() == pytest.approx(slow.item(), rel=1e-10, abs=1e-12)
    assert torch.allclose(grad_of(fast.loss, logp), grad_of(slow, logp), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("method", NAIVE_METHODS)
def test_unit_weights_change_nothing(method):
    logp, old, adv, mask = batch(seed=21)
    ones = torch.ones(mask.shape, dtype=F64)
    a = policy_loss(logp, old, adv, mask, method=method, max_len=BUDGET)
    b = policy_loss(logp, old, adv, mask, method=method, max_len=BUDGET, token_weights=ones)
    assert a.loss.item() == b.loss.item()
    assert torch.equal(grad_of(a.loss, logp), grad_of(b.loss, logp))
    assert b.metrics["token_weights/mean"] == 1.0


# ---------------------------------------------------------------- hand values


def test_hand_values_trajectory_term_is_weighted_per_token_then_averaged():
    """TIC-GRPO: (1/T)·mean_i ℓ_i·(1/L_i) Σ_t c_{i,t}; a row-constant c_i gives c_i·ℓ_i."""
    old = torch.zeros(2, 3, dtype=F64)
    logp = torch.tensor([[0.1, -0.1, 0.0], [-0.2, 0.0, 0.0]], dtype=F64, requires_grad=True)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    adv = torch.tensor([1.0, -1.0], dtype=F64)
    c = torch.tensor([[0.5, 1.5, float("nan")], [2.0, 2.0, 2.0]], dtype=F64)  # NaN is masked
    out = policy_loss(logp, old, adv, mask, method="tic_grpo", max_len=4, token_weights=c)
    ell = torch.tensor([1.0, -math.exp(-0.2)], dtype=F64)  # w' = 1 and e^-0.2, unclipped
    mean_c = torch.tensor([1.0, 2.0], dtype=F64)
    assert out.loss.item() == pytest.approx(-(ell * mean_c).mean().item() / 4, rel=1e-12)
    assert torch.allclose(out.per_seq, ell * mean_c)
    g = grad_of(out.loss, logp)
    # ∂/∂ρ_{i,t} of −(1/(N·T)) mean_c_i·w'_i·A_i = −mean_c_i·w'_i·A_i/(N·T) on response tokens
    expected = -(mean_c * torch.tensor([1.0, math.exp(-0.2)], dtype=F64) * adv)[:, None] / 8
    assert torch.allclose(g, expected * mask, rtol=1e-12)


def test_hand_values_token_terms_are_weighted_one_by_one():
    """GRPO on-policy: (1/N) Σ_i (1/L_i) Σ_t c_{i,t}·A_i."""
    logp = torch.zeros(2, 2, dtype=F64, requires_grad=True)
    mask = torch.tensor([[True, True], [True, False]])
    adv = torch.tensor([1.0, 3.0], dtype=F64)
    c = torch.tensor([[0.5, 1.0], [2.0, float("inf")]], dtype=F64)
    out = policy_loss(logp, logp.detach(), adv, mask, method="grpo", token_weights=c)
    assert out.loss.item() == pytest.approx(-((0.5 + 1.0) / 2 + 2.0 * 3.0) / 2)
    assert grad_of(out.loss, logp).flatten().tolist() == pytest.approx([-0.125, -0.25, -3.0, 0.0])


def test_kl_terms_are_not_weighted():
    """As TRL (``importance_sampling_ratio``) and verl (``rollout_is_weights``): policy term only."""
    logp, old, adv, mask = batch(seed=22)
    ref = old - 0.2
    opts = dict(method="grpo", ref_logp=ref, beta=0.1)
    a = policy_loss(logp, old, adv, mask, **opts)
    b = policy_loss(logp, old, adv, mask, token_weights=torch.full(mask.shape, 3.0), **opts)
    assert b.metrics["kl"] == a.metrics["kl"] and b.metrics["loss/kl"] == a.metrics["loss/kl"]
    assert b.metrics["loss/policy"] == pytest.approx(3 * a.metrics["loss/policy"], rel=1e-12)


def test_weights_are_constants():
    logp, old, adv, mask = batch(seed=23)
    c = weights_for(mask, 23).requires_grad_()
    out = policy_loss(logp, old, adv, mask, method="tic_grpo", max_len=BUDGET, token_weights=c)
    assert torch.autograd.grad(out.loss, c, allow_unused=True) == (None,)


def test_bf16_weights_are_computed_in_float32():
    logp, old, adv, mask = batch(dtype=torch.float32)
    c = torch.full(mask.shape, 0.5, dtype=torch.bfloat16)
    a = policy_loss(logp, old, adv, mask, method="grpo2", max_len=BUDGET, token_weights=c)
    b = policy_loss(logp, old, adv, mask, method="grpo2", max_len=BUDGET)
    assert a.loss.dtype == torch.float32
    assert a.loss.item() == pytest.approx(0.5 * b.loss.item(), rel=1e-6)


# ---------------------------------------------------------------- invariances


@settings(max_examples=40, deadline=None)
@given(
    method=st.sampled_from(NAIVE_METHODS),
    seed=st.integers(0, 10_000),
    fill=st.sampled_from([float("nan"), float("inf"), -float("inf"), -1e30, 0.0, 1e30]),
)
def test_masked_weights_never_matter(method, seed, fill):
    logp, old, adv, mask = batch(seed=seed)
    c = weights_for(mask, seed)
    opts = dict(method=method, max_len=BUDGET, ref_logp=old - 0.1, beta=0.05)
    base = policy_loss(logp, old, adv, mask, token_weights=c, **opts)
    g_base = grad_of(base.loss, logp)
    other = policy_loss(logp, old, adv, mask, token_weights=torch.where(mask, c, fill), **opts)
    assert other.loss.item() == base.loss.item()
    assert torch.equal(grad_of(other.loss, logp), g_base)
    assert other.metrics == base.metrics


@settings(max_examples=30, deadline=None)
@given(method=st.sampled_from(NAIVE_METHODS), seed=st.integers(0, 10_000), cut=st.integers(1, 7))
def test_weighted_minibatch_split_with_global_normaliser_reproduces_full_gradient(
    method, seed, cut
):
    logp, old, adv, mask = batch(n=8, seed=seed)
    c = weights_for(mask, seed)
    full = policy_loss(logp, old, adv, mask, method=method, max_len=BUDGET, token_weights=c)
    norms = dict(num_seqs=8, num_tokens=int(mask.sum()), max_len=BUDGET)
    parts, total = [], 0.0
    for sl in (slice(0, cut), slice(cut, 8)):
        lp = logp.detach()[sl].requires_grad_()
        loss = policy_loss(
            lp, old[sl], adv[sl], mask[sl], method=method, token_weights=c[sl], **norms
        ).loss
        parts.append(grad_of(loss, lp))
        total += loss.item()
    assert total == pytest.approx(full.loss.item(), rel=1e-10, abs=1e-14)
    assert torch.allclose(torch.cat(parts), grad_of(full.loss, logp), rtol=1e-10, atol=1e-14)


def test_zero_weight_on_a_row_removes_it():
    """A row whose weights are all 0 adds nothing, but still counts in the normaliser."""
    logp, old, adv, mask = batch(seed=24)
    c = torch.ones(mask.shape, dtype=F64)
    c[0] = 0.0
    for method in METHODS:
        out = policy_loss(logp, old, adv, mask, method=method, max_len=BUDGET, token_weights=c)
        assert torch.equal(grad_of(out.loss, logp)[0], torch.zeros_like(logp[0])), method


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "weights, exc, match",
    [
        (torch.ones(6, 4), ValueError, r"token_weights must have the shape of logp \(6, 5\)"),
        (torch.ones(6, 5, dtype=torch.long), TypeError, "token_weights must be a floating"),
        ([[1.0] * 5] * 6, TypeError, "token_weights must be a torch.Tensor"),
    ],
)
def test_weight_errors(weights, exc, match):
    logp, old, adv, mask = batch()
    with pytest.raises(exc, match=match):
        policy_loss(logp, old, adv, mask, method="grpo", token_weights=weights)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.5])
def test_bad_weight_on_a_response_token_names_its_position(bad):
    logp, old, adv, mask = batch()
    c = torch.ones(mask.shape, dtype=F64)
    c[3, 0] = bad  # mask[:, 0] is True
    with pytest.raises(ValueError, match=r"finite and >= 0 on response tokens; row 3, token 0"):
        policy_loss(logp, old, adv, mask, method="grpo", token_weights=c)
