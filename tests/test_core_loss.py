"""policy_loss: hand values, the naive loop, numerics, invariances, errors."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.naive import naive_objective
from ticgrpo import METHODS, group_advantages, kl_terms, policy_loss

NAIVE_METHODS = ["grpo", "tic_grpo", "grpo2", "grpo_traj_is", "gspo", "dapo", "dr_grpo", "pg"]
BUDGET = 8  # the length budget T of `batch` (wider than its padded width 5, on purpose)


def batch(n=6, t=5, seed=0, dtype=torch.float64, scale=0.3):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(n, t, generator=g, dtype=dtype) * 3
    logp = (old + scale * torch.randn(n, t, generator=g, dtype=dtype)).requires_grad_()
    mask = torch.rand(n, t, generator=g) > 0.3
    mask[:, 0] = True
    adv = torch.randn(n, generator=g, dtype=dtype)
    return logp, old, adv, mask


def grad_of(loss, x):
    (g,) = torch.autograd.grad(loss, x)
    return g


def test_every_row_has_a_naive_twin():
    assert sorted(NAIVE_METHODS) == sorted(METHODS)


# ---------------------------------------------------------------- hand values


def test_hand_values_tic_grpo_truncate_and_ppo():
    # one sequence of two tokens with ρ = (0.1, 0.2): w' = e^0.3 = 1.3499 > 1.2 -> truncated
    old = torch.zeros(2, 2, dtype=torch.float64)
    logp = torch.tensor([[0.1, 0.2], [-0.5, -0.5]], dtype=torch.float64, requires_grad=True)
    mask = torch.ones(2, 2, dtype=torch.bool)
    adv = torch.tensor([1.0, -2.0], dtype=torch.float64)
    out = policy_loss(logp, old, adv, mask, method="tic_grpo", max_len=4)
    # seq 2: w' = e^-1, below the cap: term = -2 e^-1 ; objective = (1/T)·mean of (1.2, -2/e)
    assert out.loss.item() == pytest.approx(-(1.2 - 2 * math.exp(-1)) / 2 / 4)
    g = grad_of(out.loss, logp)
    assert torch.equal(g[0], torch.zeros(2, dtype=torch.float64))  # clipped row: exactly zero
    assert g[1].tolist() == pytest.approx([math.exp(-1) / 4] * 2)  # -(1/(N·T))·(-2)·w'
    # the earlier reading (v1–v4 / ICLR): no 1/T, reachable as an explicit aggregation
    earlier = policy_loss(
        logp, old, adv, mask, method="tic_grpo", aggregation="seq_mean_token_mean"
    )
    assert earlier.loss.item() == pytest.approx(-(1.2 - 2 * math.exp(-1)) / 2)
    # "ppo" reading leaves negative advantages unclipped: a large ratio with A < 0 still pulls
    logp2 = torch.tensor([[0.3, 0.3], [0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    adv2 = torch.tensor([-1.0, 0.0], dtype=torch.float64)
    trunc = policy_loss(logp2, old, adv2, mask, method="tic_grpo", max_len=2)
    ppo = policy_loss(logp2, old, adv2, mask, method="tic_grpo", tic_clip="ppo", max_len=2)
    assert trunc.loss.item() == pytest.approx(1.2 / 2 / 2)
    assert ppo.loss.item() == pytest.approx(math.exp(0.6) / 2 / 2)
    assert grad_of(trunc.loss, logp2).abs().sum() == 0
    assert grad_of(ppo.loss, logp2)[0].tolist() == pytest.approx([math.exp(0.6) / 4] * 2)


def test_hand_values_grpo_dapo_drgrpo_normalisers():
    old = torch.zeros(2, 3, dtype=torch.float64)
    logp = torch.zeros(2, 3, dtype=torch.float64)  # on-policy: every ratio is 1
    mask = torch.tensor([[True, True, True], [True, False, False]])
    adv = torch.tensor([1.0, 3.0], dtype=torch.float64)
    # per-token term = A; grpo: mean_i mean_t = (1 + 3)/2
    assert policy_loss(logp, old, adv, mask, method="grpo").loss.item() == pytest.approx(-2.0)
    # dapo: (3·1 + 1·3) / 4 tokens
    assert policy_loss(logp, old, adv, mask, method="dapo").loss.item() == pytest.approx(-1.5)
    # dr_grpo: (3 + 3) / (N·max_len), max_len the budget given (never the padded width)
    assert policy_loss(
        logp, old, adv, mask, method="dr_grpo", max_len=3
    ).loss.item() == pytest.approx(-1.0)
    assert policy_loss(
        logp, old, adv, mask, method="dr_grpo", max_len=6
    ).loss.item() == pytest.approx(-0.5)


def test_gspo_uses_length_normalised_ratio():
    old = torch.zeros(1, 4, dtype=torch.float64)
    logp = torch.tensor([[0.4, 0.0, 0.0, 9.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, False, False]])  # the 9.0 is masked and must not count
    out = policy_loss(
        logp,
        old,
        torch.ones(1, dtype=torch.float64),
        mask,
        method="gspo",
        eps_low=0.5,
        eps_high=0.5,
    )
    assert out.loss.item() == pytest.approx(-math.exp(0.2))


def test_kl_estimators_hand_values():
    logp = torch.tensor([[0.0, -1.0]], dtype=torch.float64)
    ref = torch.tensor([[-0.5, -1.0]], dtype=torch.float64)
    d = -0.5
    assert kl_terms(logp, ref, "k1")[0].tolist() == pytest.approx([0.5, 0.0])
    assert kl_terms(logp, ref, "k2")[0].tolist() == pytest.approx([d * d / 2, 0.0])
    assert kl_terms(logp, ref, "k3")[0].tolist() == pytest.approx([math.exp(d) - d - 1, 0.0])
    mask = torch.ones(1, 2, dtype=torch.bool)
    adv = torch.zeros(1, dtype=torch.float64)
    out = policy_loss(
        logp, logp, adv, mask, method="grpo", ref_logp=ref, beta=0.1, kl_estimator="k3"
    )
    assert out.metrics["kl"] == pytest.approx((math.exp(d) - d - 1) / 2)
    assert out.loss.item() == pytest.approx(0.1 * (math.exp(d) - d - 1) / 2)


# ---------------------------------------------------------------- fast vs naive


@settings(max_examples=30, deadline=None)
@given(
    method=st.sampled_from(NAIVE_METHODS),
    seed=st.integers(0, 10_000),
    scale=st.sampled_from([0.05, 0.3, 1.0]),
)
def test_matches_naive_loop_value_and_gradient(method, seed, scale):
    logp, old, adv, mask = batch(seed=seed, scale=scale)
    eps_high = 0.28 if method == "dapo" else 0.2
    fast = policy_loss(logp, old, adv, mask, method=method, eps_high=eps_high, max_len=BUDGET)
    slow = -naive_objective(logp, old, adv, mask, method, eps_high=eps_high, max_len=BUDGET)
    assert fast.loss.item() == pytest.approx(slow.item(), rel=1e-10, abs=1e-12)
    assert torch.allclose(grad_of(fast.loss, logp), grad_of(slow, logp), rtol=1e-9, atol=1e-12)


def test_tic_grpo_equals_broadcast_token_mean():
    """SPEC: the same ℓ_i results from broadcasting w'_i to every token and averaging per sequence."""
    logp, old, adv, mask = batch(seed=3)
    out = policy_loss(logp, old, adv, mask, method="tic_grpo", max_len=BUDGET)
    lw = torch.where(mask, logp - old, 0).sum(1)
    expected = (torch.clamp(lw.exp(), max=1.2) * adv).mean() / BUDGET
    assert out.loss.item() == pytest.approx(-expected.item(), rel=1e-12)
    assert torch.allclose(out.per_seq, torch.clamp(lw.exp(), max=1.2).detach() * adv)


def test_unclipped_tic_gradient_is_weighted_score_function():
    logp, old, adv, mask = batch(seed=4)
    out = policy_loss(logp, old, adv, mask, method="tic_grpo", clip="none", max_len=BUDGET)
    w = torch.where(mask, logp - old, 0).sum(1).exp().detach()
    expected = -(w * adv)[:, None] * mask / logp.shape[0] / BUDGET  # d/dlogp of −(1/(NT)) Σ w'A
    assert torch.allclose(grad_of(out.loss, logp), expected, rtol=1e-10)


# ---------------------------------------------------------------- numerics


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method", NAIVE_METHODS)
@pytest.mark.parametrize("tic_clip", ["truncate", "ppo"])
def test_extreme_log_ratios_stay_finite(dtype, method, tic_clip):
    old = torch.zeros(4, 10, dtype=dtype)
    logp = torch.zeros(4, 10, dtype=dtype)
    logp[0] = 100.0  # trajectory log-ratio +1000
    logp[1] = -100.0  # trajectory log-ratio -1000
    logp.requires_grad_()
    mask = torch.ones(4, 10, dtype=torch.bool)
    adv = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=dtype)
    extra = {"tic_clip": tic_clip} if method == "tic_grpo" else {}
    out = policy_loss(
        logp, old, adv, mask, method=method, ref_logp=old, beta=0.1, max_len=10, **extra
    )
    g = grad_of(out.loss, logp)
    assert torch.isfinite(out.loss) and torch.isfinite(g).all()
    assert all(math.isfinite(v) for v in out.metrics.values())
    if METHODS[method].ratio == "traj_sum":
        assert out.metrics["log_ratio/traj_max"] == pytest.approx(1000.0)
        assert out.metrics["log_ratio/traj_min"] == pytest.approx(-1000.0)
        assert 1.0 <= out.metrics["ess/traj"] < 1.01  # one weight dominates
        assert torch.equal(g[0], torch.zeros(10, dtype=dtype))  # clipped (or capped) row


@pytest.mark.parametrize("method", [m for m in NAIVE_METHODS if m != "pg"])  # pg has no clip
def test_clipped_rows_have_exactly_zero_gradient(method):
    old = torch.zeros(3, 4, dtype=torch.float64)
    logp = torch.full((3, 4), 0.5, dtype=torch.float64, requires_grad=True)  # ratio e^0.5 > 1.2
    mask = torch.ones(3, 4, dtype=torch.bool)
    adv = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)  # positive: upper clip binds
    out = policy_loss(logp, old, adv, mask, method=method, eps_low=1e-3, eps_high=1e-3, max_len=4)
    assert torch.equal(grad_of(out.loss, logp), torch.zeros_like(logp))
    assert out.metrics["clip_ratio/high"] == 1.0


@settings(max_examples=40, deadline=None)
@given(
    method=st.sampled_from(NAIVE_METHODS), seed=st.integers(0, 10_000), fill=st.floats(-1e4, 1e4)
)
def test_masked_positions_never_matter(method, seed, fill):
    logp, old, adv, mask = batch(seed=seed)
    ref = old - 0.1
    opts = dict(method=method, ref_logp=ref, beta=0.05, max_len=BUDGET)
    base = policy_loss(logp, old, adv, mask, **opts)
    g_base = grad_of(base.loss, logp)
    logp2 = torch.where(mask, logp.detach(), fill).requires_grad_()
    old2 = torch.where(mask, old, -fill)
    ref2 = torch.where(mask, ref, fill * 0.5)
    other = policy_loss(logp2, old2, adv, mask, **{**opts, "ref_logp": ref2})
    assert other.loss.item() == base.loss.item()
    assert torch.equal(grad_of(other.loss, logp2), g_base)
    assert other.metrics == base.metrics


def test_masked_inf_and_nan_never_matter():
    logp, old, adv, mask = batch(seed=5)
    base = policy_loss(logp, old, adv, mask, method="tic_grpo", max_len=BUDGET)
    logp2 = torch.where(mask, logp.detach(), float("nan")).requires_grad_()
    old2 = torch.where(mask, old, float("-inf"))
    other = policy_loss(logp2, old2, adv, mask, method="tic_grpo", max_len=BUDGET)
    assert other.loss.item() == base.loss.item()
    assert torch.isfinite(grad_of(other.loss, logp2)).all()


def test_bf16_inputs_are_computed_in_float32():
    logp, old, adv, mask = batch(dtype=torch.float32)
    out = policy_loss(
        logp.detach().bfloat16().requires_grad_(),
        old.bfloat16(),
        adv.bfloat16(),
        mask,
        method="tic_grpo",
        max_len=BUDGET,
    )
    assert out.loss.dtype == torch.float32


# ---------------------------------------------------------------- invariances


@settings(max_examples=25, deadline=None)
@given(method=st.sampled_from(NAIVE_METHODS), seed=st.integers(0, 10_000))
def test_permuting_sequences_permutes_per_sequence_quantities(method, seed):
    logp, old, adv, mask = batch(seed=seed)
    perm = torch.randperm(logp.shape[0], generator=torch.Generator().manual_seed(seed))
    a = policy_loss(logp, old, adv, mask, method=method, max_len=BUDGET)
    lp2 = logp.detach()[perm].requires_grad_()
    b = policy_loss(lp2, old[perm], adv[perm], mask[perm], method=method, max_len=BUDGET)
    assert b.loss.item() == pytest.approx(a.loss.item(), rel=1e-12)
    assert torch.allclose(b.per_seq, a.per_seq[perm])
    assert torch.allclose(grad_of(b.loss, lp2), grad_of(a.loss, logp)[perm])


@settings(max_examples=25, deadline=None)
@given(method=st.sampled_from(NAIVE_METHODS), seed=st.integers(0, 10_000), cut=st.integers(1, 7))
def test_minibatch_split_with_global_normaliser_reproduces_full_gradient(method, seed, cut):
    logp, old, adv, mask = batch(n=8, seed=seed)
    full = grad_of(policy_loss(logp, old, adv, mask, method=method, max_len=BUDGET).loss, logp)
    norms = dict(num_seqs=8, num_tokens=int(mask.sum()), max_len=BUDGET)
    parts = []
    for sl in (slice(0, cut), slice(cut, 8)):
        lp = logp.detach()[sl].requires_grad_()
        loss = policy_loss(lp, old[sl], adv[sl], mask[sl], method=method, **norms).loss
        parts.append(grad_of(loss, lp))
    assert torch.allclose(torch.cat(parts), full, rtol=1e-10, atol=1e-14)


def test_on_policy_every_method_is_the_score_function_gradient():
    """At θ = θ_old every ratio is 1: each method's gradient is A·∇logπ times its normaliser."""
    logp, _, adv, mask = batch(seed=9)
    old = logp.detach()
    lengths = mask.sum(1, keepdim=True).double()
    n, t = logp.shape
    expected = {
        "seq_mean_token_mean": adv[:, None] * mask / lengths / n,
        "seq_mean_token_mean_over_constant": adv[:, None] * mask / lengths / (n * BUDGET),
        "token_mean": adv[:, None] * mask / mask.sum(),
        "token_sum_over_constant": adv[:, None] * mask / (n * BUDGET),
    }
    # The trajectory ratio differentiates to w'·Σ_t ∇logπ whatever the aggregation averages over
    # tokens: its on-policy gradient is the token *sum* per sequence, (1/N) Σ_i A_i Σ_t ∇logπ,
    # times 1/T for TIC-GRPO (v5 Eq. 8) and without it for GRPO+Traj_IS (its 1/L_i cancels).
    traj = {
        "seq_mean_token_mean": adv[:, None] * mask / n,
        "seq_mean_token_mean_over_constant": adv[:, None] * mask / (n * BUDGET),
    }
    assert t < BUDGET  # so that a normaliser read from the padded width would fail here
    for name, row in METHODS.items():
        out = policy_loss(logp, old, adv, mask, method=name, max_len=BUDGET)
        g = -grad_of(out.loss, logp)
        ref = traj[row.aggregation] if row.ratio == "traj_sum" else expected[row.aggregation]
        assert torch.allclose(g, ref.double(), rtol=1e-10), name


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "change, exc, match",
    [
        (dict(advantages=torch.zeros(5)), ValueError, r"advantages must have shape \[N\] = \(6,\)"),
        (dict(method="ppo"), ValueError, "unknown method 'ppo'"),
        (dict(mask=torch.ones(6, 5)), TypeError, "mask must be a bool tensor"),
        (dict(old_logp=torch.zeros(6, 4)), ValueError, "old_logp must have the shape"),
        (dict(logp=torch.zeros(6)), ValueError, r"logp must have shape \[N, T\]"),
        (dict(logp=torch.zeros(6, 5, dtype=torch.long)), TypeError, "floating"),
        (dict(clip="sym"), ValueError, "unknown clip 'sym'"),
        (dict(aggregation="sum"), ValueError, "unknown aggregation"),
        (dict(beta=0.1), ValueError, "needs ref_logp"),
        (dict(tic_clip="upper"), ValueError, "unknown tic_clip"),
        (dict(method="grpo", tic_clip="ppo"), ValueError, "'tic_grpo' only"),
        (dict(num_seqs=0), ValueError, "num_seqs must be > 0"),
        (dict(temperature=1.0), TypeError, "unknown policy_loss option"),
        (dict(eps_low=1.5), ValueError, "clip widths"),
    ],
)
def test_clear_errors(change, exc, match):
    logp, old, adv, mask = batch()
    args = dict(logp=logp, old_logp=old, advantages=adv, mask=mask, method="tic_grpo", max_len=5)
    args.update(change)
    with pytest.raises(exc, match=match):
        policy_loss(
            args.pop("logp"), args.pop("old_logp"), args.pop("advantages"), args.pop("mask"), **args
        )


def test_group_advantages_feed_policy_loss_end_to_end():
    logp, old, _, mask = batch(n=6)
    adv = group_advantages(torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0, 1.0]), 3)
    out = policy_loss(logp, old, adv.double(), mask, method="tic_grpo", max_len=BUDGET)
    assert out.metrics["ess/traj"] <= 6 and out.loss.requires_grad
