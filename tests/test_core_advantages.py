"""group_advantages: hand values, the naive loop, properties, errors."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.naive import naive_advantages
from ticgrpo import ADVANTAGE_MODES, group_advantages

R = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0], dtype=torch.float64)


def test_hand_values_std_sample_and_population():
    # group 1: [1,0,0,0], mean 1/4, sample var = (9/16 + 3/16)/3 = 1/4 -> std 1/2
    adv = group_advantages(R, 4, eps=0.0)
    assert adv[:4].tolist() == pytest.approx([1.5, -0.5, -0.5, -0.5])
    # population std = sqrt(3/16)
    pop = group_advantages(R, 4, eps=0.0, std_kind="population")
    assert pop[0].item() == pytest.approx(0.75 / math.sqrt(3 / 16))


def test_hand_values_mean_rloo_none_length():
    assert group_advantages(R, 4, mode="mean")[:4].tolist() == pytest.approx(
        [0.75, -0.25, -0.25, -0.25]
    )
    # rloo: r_i - mean of the others: 1 - 0 = 1; 0 - 1/3
    assert group_advantages(R, 4, mode="rloo")[:4].tolist() == pytest.approx(
        [1.0, -1 / 3, -1 / 3, -1 / 3]
    )
    assert torch.equal(group_advantages(R, 4, mode="none"), R)
    lengths = torch.tensor([2, 4, 1, 1], dtype=torch.float64)
    r = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    adv = group_advantages(r, 2, mode="length_corrected", lengths=lengths, eps=0.0)
    # group 1: r/L = [0.5, 0.25], mean 0.375, sample std = 0.125*sqrt(2)
    assert adv[0].item() == pytest.approx(0.125 / (0.125 * math.sqrt(2)))
    assert adv[2:].tolist() == [0.0, 0.0]


@pytest.mark.parametrize("mode", ["std", "mean", "rloo", "length_corrected"])
def test_all_equal_groups_are_exactly_zero(mode):
    r = torch.full(
        (6,), 0.1, dtype=torch.float32
    )  # 0.1 is not exact: rounding residue must not leak
    adv = group_advantages(r, 3, mode=mode, lengths=torch.full((6,), 3.0))
    assert torch.equal(adv, torch.zeros(6))
    assert not torch.isnan(adv).any()


@settings(max_examples=60, deadline=None)
@given(
    p=st.integers(1, 4),
    g=st.integers(2, 6),
    mode=st.sampled_from(ADVANTAGE_MODES),
    sample=st.booleans(),
    data=st.data(),
)
def test_matches_naive_loop(p, g, mode, sample, data):
    n = p * g
    rewards = data.draw(
        st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0]), min_size=n, max_size=n)
    )
    lengths = data.draw(st.lists(st.integers(1, 9), min_size=n, max_size=n))
    fast = group_advantages(
        torch.tensor(rewards, dtype=torch.float64), g, mode=mode,
        lengths=torch.tensor(lengths, dtype=torch.float64),
        std_kind="sample" if sample else "population",
    )  # fmt: skip
    slow = naive_advantages(rewards, g, mode, lengths=lengths, sample=sample)
    assert fast.tolist() == pytest.approx(slow, rel=1e-12, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    g=st.integers(2, 6),
    seed=st.integers(0, 10_000),
    shift=st.floats(-5, 5),
    scale=st.floats(0.1, 10),
)
def test_properties_permutation_shift_scale(g, seed, shift, scale):
    gen = torch.Generator().manual_seed(seed)
    r = torch.rand(3 * g, generator=gen, dtype=torch.float64)
    adv = group_advantages(r, g, eps=0.0)
    # permuting within a group permutes its advantages
    perm = torch.cat([torch.randperm(g, generator=gen) + k * g for k in range(3)])
    assert torch.allclose(group_advantages(r[perm], g, eps=0.0), adv[perm])
    # std advantages are invariant to an affine map of the rewards with positive scale
    assert torch.allclose(group_advantages(r * scale + shift, g, eps=0.0), adv, atol=1e-9)
    # centred modes sum to zero in every group
    for mode in ("std", "mean", "rloo"):
        sums = group_advantages(r, g, mode=mode).view(-1, g).sum(1)
        assert torch.allclose(sums, torch.zeros(3, dtype=torch.float64), atol=1e-9)


def test_integer_rewards_become_float():
    adv = group_advantages(torch.tensor([1, 0, 1, 1]), 2)
    assert adv.dtype == torch.float32 and adv[2:].tolist() == [0.0, 0.0]


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(rewards=torch.zeros(6), group_size=4), ValueError, "does not divide"),
        (dict(rewards=torch.zeros(3), group_size=1), ValueError, "at least 2"),
        (dict(rewards=torch.zeros(3), group_size=1, mode="rloo"), ValueError, "at least 2"),
        (
            dict(rewards=torch.zeros(4), group_size=2, mode="zscore"),
            ValueError,
            "unknown advantage mode",
        ),
        (dict(rewards=torch.zeros(2, 2), group_size=2), ValueError, r"shape \[N\]"),
        (dict(rewards=[1.0, 0.0], group_size=2), TypeError, "torch.Tensor"),
        (
            dict(rewards=torch.tensor([1.0, float("nan")]), group_size=2),
            ValueError,
            r"rewards\[1\]",
        ),
        (
            dict(rewards=torch.zeros(4), group_size=2, mode="length_corrected"),
            ValueError,
            "needs lengths",
        ),
        (dict(rewards=torch.zeros(4), group_size=0), ValueError, "positive int"),
        (dict(rewards=torch.zeros(4), group_size=2, std_kind="unbiased"), ValueError, "std_kind"),
    ],
)
def test_clear_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        group_advantages(**kwargs)


def test_group_of_one_allowed_for_modes_without_spread():
    r = torch.tensor([1.0, 0.0, 2.0])
    assert torch.equal(group_advantages(r, 1, mode="none"), r)
    assert torch.equal(group_advantages(r, 1, mode="mean"), torch.zeros(3))
