"""Chunked log-probs (llm/update/logprobs.py) against the naive full-logits reference."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

transformers = pytest.importorskip("transformers")

from llm.update.logprobs import (  # noqa: E402
    naive_token_logprobs,
    position_ids_from_mask,
    token_logprobs,
)

V = 97


def tiny_qwen2(dtype: torch.dtype = torch.float64, seed: int = 0, tie: bool = False) -> nn.Module:
    """A 2-layer Qwen2 with random weights, built locally (nothing downloaded)."""
    cfg = transformers.Qwen2Config(
        vocab_size=V,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=tie,
    )
    torch.manual_seed(seed)
    return transformers.Qwen2ForCausalLM(cfg).to(dtype).eval()


@pytest.fixture(scope="module")
def model64() -> nn.Module:
    return tiny_qwen2(torch.float64)


def padded_batch(seed: int, batch: int, seq: int, max_left: int, max_right: int):
    """[B, S] ids with left padding (prompt side) and right padding (completion side)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (batch, seq), generator=gen)
    mask = torch.ones(batch, seq, dtype=torch.long)
    for b in range(batch):
        left = int(torch.randint(0, max_left + 1, (1,), generator=gen))
        right = int(torch.randint(0, max_right + 1, (1,), generator=gen))
        mask[b, :left] = 0
        if right:
            mask[b, seq - right :] = 0
    ids = ids.masked_fill(mask == 0, 0)  # pad id; whatever it is must not matter
    return ids, mask


def test_position_ids_match_generate_convention() -> None:
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 0, 0]]


@pytest.mark.parametrize("chunk_size", [1, 5, 7, 64])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_values_equal_naive_fp64(model64, chunk_size: int, temperature: float) -> None:
    ids, mask = padded_batch(1, batch=3, seq=19, max_left=5, max_right=4)
    kw = dict(logits_to_keep=11, with_entropy=True, temperature=temperature)
    fast = token_logprobs(model64, ids, mask, chunk_size=chunk_size, **kw)
    ref = naive_token_logprobs(model64, ids, mask, **kw)
    assert fast.logp.shape == (3, 11) and fast.logp.dtype == torch.float64
    torch.testing.assert_close(fast.logp, ref.logp, rtol=0, atol=1e-12)
    torch.testing.assert_close(fast.entropy, ref.entropy, rtol=0, atol=1e-12)
    assert bool((fast.logp[mask[:, -11:] == 0] == 0).all())


def test_values_equal_naive_fp32_default_keep() -> None:
    model = tiny_qwen2(torch.float32, seed=3)
    ids, mask = padded_batch(2, batch=2, seq=16, max_left=3, max_right=3)
    fast = token_logprobs(model, ids, mask, chunk_size=6, with_entropy=True)
    ref = naive_token_logprobs(model, ids, mask, with_entropy=True)
    assert fast.logp.shape == (2, 15) and fast.logp.dtype == torch.float32
    torch.testing.assert_close(fast.logp, ref.logp, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.entropy, ref.entropy, rtol=1e-5, atol=1e-5)


def test_hand_checked_entropy_is_bounded(model64) -> None:
    ids, mask = padded_batch(4, batch=2, seq=9, max_left=0, max_right=0)
    out = token_logprobs(model64, ids, mask, with_entropy=True)
    # entropy of a distribution over V symbols lies in [0, log V]; log-probs are <= 0
    assert bool((out.entropy >= 0).all()) and bool(
        (out.entropy <= torch.log(torch.tensor(V))).all()
    )
    assert bool((out.logp <= 0).all())


def _param_grads(model: nn.Module, fn, ids, mask, **kw) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    out = fn(model, ids, mask, **kw)
    gen = torch.Generator().manual_seed(7)
    w1 = torch.randn(out.logp.shape, generator=gen, dtype=out.logp.dtype)
    w2 = torch.randn(out.logp.shape, generator=gen, dtype=out.logp.dtype)
    loss = (w1 * out.logp).sum() + (w2 * out.entropy).sum()
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-11), (torch.float32, 2e-5)])
@pytest.mark.parametrize("tie", [False, True])
def test_gradients_equal_naive(dtype: torch.dtype, tol: float, tie: bool) -> None:
    model = tiny_qwen2(dtype, seed=5, tie=tie)
    ids, mask = padded_batch(5, batch=3, seq=14, max_left=4, max_right=3)
    kw = dict(logits_to_keep=9, with_entropy=True, temperature=0.8)
    fast = _param_grads(model, token_logprobs, ids, mask, chunk_size=4, **kw)
    ref = _param_grads(model, naive_token_logprobs, ids, mask, **kw)
    assert fast.keys() == ref.keys() and len(ref) == len(list(model.parameters()))
    for name in ref:
        scale = ref[name].abs().max().clamp(min=1.0)
        torch.testing.assert_close(fast[name] / scale, ref[name] / scale, rtol=0, atol=tol)


def test_left_padding_is_invisible(model64) -> None:
    """A left-padded, right-padded row scores its tokens exactly as the same tokens alone."""
    gen = torch.Generator().manual_seed(11)
    tokens = torch.randint(1, V, (10,), generator=gen)
    alone = token_logprobs(model64, tokens[None], torch.ones(1, 10, dtype=torch.long))
    ids = torch.cat([torch.zeros(4, dtype=torch.long), tokens, torch.zeros(3, dtype=torch.long)])
    mask = torch.cat([torch.zeros(4), torch.ones(10), torch.zeros(3)]).long()
    other = torch.randint(1, V, (17,), generator=gen)
    batch = token_logprobs(
        model64, torch.stack([ids, other]), torch.stack([mask, torch.ones(17).long()]), chunk_size=3
    )
    # row 0, columns for tokens[1:] are 4..12 of the 16 scored positions (target index 5..13)
    torch.testing.assert_close(batch.logp[0, 4:13], alone.logp[0], rtol=0, atol=1e-12)
    # targets that are padding score 0 (column 3 targets tokens[0], which has no context)
    assert bool((batch.logp[0, :3] == 0).all()) and bool((batch.logp[0, 13:] == 0).all())


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    batch=st.integers(1, 3),
    seq=st.integers(3, 17),
    chunk=st.integers(1, 20),
    frac=st.floats(0.05, 1.0),
)
def test_property_chunking_never_changes_values(model64, seed, batch, seq, chunk, frac) -> None:
    ids, mask = padded_batch(seed, batch, seq, max_left=seq // 3, max_right=seq // 4)
    keep = max(1, int(frac * (seq - 1)))
    fast = token_logprobs(model64, ids, mask, logits_to_keep=keep, chunk_size=chunk)
    ref = naive_token_logprobs(model64, ids, mask, logits_to_keep=keep)
    torch.testing.assert_close(fast.logp, ref.logp, rtol=0, atol=1e-12)


def test_bf16_model_gives_float32_close_to_naive() -> None:
    model = tiny_qwen2(torch.bfloat16, seed=2)
    ids, mask = padded_batch(3, batch=2, seq=12, max_left=3, max_right=2)
    fast = token_logprobs(model, ids, mask, chunk_size=5, with_entropy=True)
    ref = naive_token_logprobs(model, ids, mask, with_entropy=True)
    assert fast.logp.dtype == torch.float32 and fast.entropy.dtype == torch.float32
    # same bf16 logits, both softmaxed in float32: only summation order differs
    torch.testing.assert_close(fast.logp, ref.logp, rtol=1e-4, atol=1e-4)


class _LogitsOnly(nn.Module):
    """A causal LM without the .model/.lm_head layout: exercises the fallback path."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask, position_ids, use_cache=False):
        return self.inner(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
        )


def test_fallback_path_for_models_without_lm_head(model64) -> None:
    ids, mask = padded_batch(6, batch=2, seq=10, max_left=2, max_right=2)
    wrapped = _LogitsOnly(model64)
    fast = token_logprobs(wrapped, ids, mask, chunk_size=3, with_entropy=True)
    ref = naive_token_logprobs(model64, ids, mask, with_entropy=True)
    torch.testing.assert_close(fast.logp, ref.logp, rtol=0, atol=1e-12)
    torch.testing.assert_close(fast.entropy, ref.entropy, rtol=0, atol=1e-12)


class _LargestVocabTensor(TorchDispatchMode):
    """Records the largest number of rows of any op output whose last dimension is V.

    The lm_head weight's transpose [H, V] (H = 32) is a parameter view, not an activation: skipped.
    """

    def __init__(self) -> None:
        super().__init__()
        self.max_rows = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.shape[-1:] == (V,) and t.shape != (32, V):
                self.max_rows = max(self.max_rows, t.numel() // V)
        return out


def test_no_tensor_larger_than_one_chunk_of_vocab_rows() -> None:
    """Forward and backward never create a [*, V] tensor with more rows than one chunk."""
    model = tiny_qwen2(torch.float32, seed=1).train()
    ids, mask = padded_batch(8, batch=4, seq=40, max_left=5, max_right=5)
    with _LargestVocabTensor() as fast_mode:
        out = token_logprobs(model, ids, mask, chunk_size=8, with_entropy=True)
        (out.logp.sum() + out.entropy.sum()).backward()
    assert 0 < fast_mode.max_rows <= 8
    with _LargestVocabTensor() as naive_mode:
        naive_token_logprobs(model, ids, mask).logp.sum().backward()
    assert naive_mode.max_rows >= 4 * 39  # the reference does hold [B, C, V]


def test_no_grad_path_and_bad_arguments(model64) -> None:
    ids, mask = padded_batch(9, batch=2, seq=8, max_left=1, max_right=1)
    with torch.no_grad():
        out = token_logprobs(model64, ids, mask, chunk_size=2)
    assert not out.logp.requires_grad and out.entropy is None
    with pytest.raises(ValueError, match="logits_to_keep"):
        token_logprobs(model64, ids, mask, logits_to_keep=8)
    with pytest.raises(ValueError, match="attention_mask shape"):
        token_logprobs(model64, ids, mask[:, 1:])
    with pytest.raises(ValueError, match="chunk_size"):
        token_logprobs(model64, ids, mask, chunk_size=0)
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(model64, ids, mask, temperature=0.0)


class _WrappedHead(nn.Module):
    """A non-``nn.Linear`` head (like a LoRA wrapper): takes the checkpointed generic path."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden)


@pytest.mark.parametrize("head_kind", ["wrapped", "bias"])
def test_other_heads_values_and_gradients_equal_naive(head_kind: str) -> None:
    model = tiny_qwen2(torch.float64, seed=9)
    old = model.lm_head
    if head_kind == "wrapped":
        model.lm_head = _WrappedHead(old)
    else:
        model.lm_head = nn.Linear(old.in_features, old.out_features, bias=True).double()
        with torch.no_grad():
            model.lm_head.weight.copy_(old.weight)
            model.lm_head.bias.normal_()
    ids, mask = padded_batch(10, batch=2, seq=12, max_left=3, max_right=2)
    kw = dict(logits_to_keep=8, with_entropy=True, temperature=1.3)
    fast = _param_grads(model, token_logprobs, ids, mask, chunk_size=3, **kw)
    ref = _param_grads(model, naive_token_logprobs, ids, mask, **kw)
    assert fast.keys() == ref.keys()
    for name in ref:
        torch.testing.assert_close(fast[name], ref[name], rtol=1e-10, atol=1e-11)


def test_entropy_only_and_logp_only_gradients(model64) -> None:
    """Backward with only one of the two outputs in the loss (the other's gradient is None)."""
    ids, mask = padded_batch(12, batch=2, seq=9, max_left=2, max_right=1)
    for pick in ("logp", "entropy"):
        grads = []
        for fn in (token_logprobs, naive_token_logprobs):
            model64.zero_grad(set_to_none=True)
            getattr(fn(model64, ids, mask, with_entropy=True, chunk_size=4), pick).sum().backward()
            grads.append(model64.lm_head.weight.grad.clone())
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-12)
    model64.zero_grad(set_to_none=True)


def test_gradient_checkpointing_model_matches_naive() -> None:
    model = tiny_qwen2(torch.float64, seed=13).train()
    ids, mask = padded_batch(13, batch=2, seq=11, max_left=2, max_right=2)
    ref = _param_grads(model, naive_token_logprobs, ids, mask, with_entropy=True)
    model.activation_checkpointing_enable()
    fast = _param_grads(model, token_logprobs, ids, mask, with_entropy=True, chunk_size=5)
    for name in ref:
        torch.testing.assert_close(fast[name], ref[name], rtol=1e-10, atol=1e-12)


def test_unused_entropy_costs_no_extra_backward_work(model64) -> None:
    """With the entropy computed but not in the loss, backward does exactly the logp-only work."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class CountOps(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.count += 1
            return func(*args, **(kwargs or {}))

    ids, mask = padded_batch(13, batch=2, seq=9, max_left=2, max_right=1)
    counts = []
    for with_entropy in (False, True):
        out = token_logprobs(model64, ids, mask, with_entropy=with_entropy, chunk_size=4)
        model64.zero_grad(set_to_none=True)
        with CountOps() as ops:
            out.logp.sum().backward()
        counts.append(ops.count)
    model64.zero_grad(set_to_none=True)
    assert counts[0] == counts[1]
