"""Per-token log-probabilities of a causal LM without a float32 ``[B, S, V]`` tensor.

The policy-gradient losses need ``log π(y_t | y_<t)`` (and, for logging or a bonus, the entropy of
``π(· | y_<t)``) for the response tokens only. The plain route — full logits, ``log_softmax``,
``gather`` — holds ``B·S·V`` floats; at Qwen's vocabulary (V = 151,936) one 4096-token sequence is
2.5 GB in float32 before autograd keeps its copies. Here the final hidden states ``[B, S, H]`` go
through ``lm_head`` in chunks of ``chunk_size`` token positions; each chunk's float32 logits live
only inside that chunk, and backward recomputes them (activation checkpointing), so the extra
memory is ``O(chunk_size · V)`` whatever B, S or C.

Conventions (shared with ``naive_token_logprobs``, the reference):

- column ``c`` of the ``[B, C]`` output is ``log π(input_ids[:, S-C+c] | input_ids[:, :S-C+c])``;
- positions come from the attention mask (``cumsum - 1``), exactly as ``generate`` assigns them to
  a left-padded prompt, so recomputed log-probs match the ones the sampler used;
- a column whose target token is padding (``attention_mask == 0``) holds 0 and gets no gradient;
  such positions are also skipped by ``lm_head`` (padding removal);
- logits are divided by ``temperature`` in float32 before the softmax (float32 outputs for bf16,
  fp16 and fp32 models; a float64 model gives float64, which the exactness tests use).

The per-chunk formulas (log-prob, entropy, and the fused ``nn.Linear`` autograd kernel
``_LinearLogProbs``) live in ``llm.update.fused_head``; this module lays the tokens out (positions,
targets, padding removal, the hidden-state capture) and walks the chunks.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from llm.update.fused_head import _chunk_logp, _chunk_stats, _LinearLogProbs, _upcast

__all__ = ["TokenLogProbs", "token_logprobs", "naive_token_logprobs", "position_ids_from_mask"]


@dataclass
class TokenLogProbs:
    """Result of ``token_logprobs``: ``logp`` [B, C] float32, ``entropy`` [B, C] float32 or None."""

    logp: torch.Tensor
    entropy: torch.Tensor | None = None


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, S] positions ``cumsum(mask) - 1`` (0 on padding), as ``generate`` assigns them."""
    mask = attention_mask.long()
    return (mask.cumsum(-1) - 1).clamp(min=0) * mask


def _check_inputs(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    logits_to_keep: int | None,
    chunk_size: int,
    temperature: float,
) -> int:
    """Validate shapes and options; return C, the number of scored positions."""
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [B, S], got shape {tuple(input_ids.shape)}")
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape "
            f"{tuple(input_ids.shape)}"
        )
    seq_len = input_ids.shape[1]
    num_keep = seq_len - 1 if logits_to_keep is None else int(logits_to_keep)
    if not 0 < num_keep <= seq_len - 1:
        raise ValueError(f"logits_to_keep must be in [1, S-1] = [1, {seq_len - 1}], got {num_keep}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return num_keep


def _split_head(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """(base, lm_head) of an HF causal LM, or None when the model does not have that layout."""
    base, head = getattr(model, "model", None), getattr(model, "lm_head", None)
    if isinstance(base, nn.Module) and isinstance(head, nn.Module):
        return base, head
    return None


def _final_hidden(
    model: nn.Module, base: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """[B, S, H] final (post-norm) hidden states, captured by a hook on ``base``.

    The call goes through the top-level ``model`` rather than ``base`` so that wrappers hooked on
    the root (FSDP2's all-gather of the embedding, final norm and lm_head, gradient checkpointing)
    run as in any forward pass; ``logits_to_keep=1`` keeps the root's own lm_head call to one
    position.
    """
    captured: list[torch.Tensor] = []

    def hook(_module: nn.Module, _args: tuple, output: object) -> None:
        hidden = getattr(output, "last_hidden_state", None)
        captured.append(hidden if hidden is not None else output[0])

    kwargs = {"use_cache": False}
    params = inspect.signature(model.forward).parameters
    if "logits_to_keep" in params:  # older or custom forwards without it compute all logits
        kwargs["logits_to_keep"] = 1
    handle = base.register_forward_hook(hook)
    try:
        model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
            **kwargs,
        )
    finally:
        handle.remove()
    if len(captured) != 1:
        raise RuntimeError(f"expected one forward of model.model, saw {len(captured)}")
    return captured[0]


def chunked_head_logprobs(
    head: nn.Module,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    *,
    chunk_size: int,
    with_entropy: bool,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run ``head`` over hidden [M, H] in chunks of ``chunk_size`` rows: -> logp [M], entropy [M].

    A plain ``nn.Linear`` head takes the fused ``_LinearLogProbs`` kernel. Any other head (a LoRA
    wrapper, a custom projection) goes through activation checkpointing: forward keeps only each
    chunk's input (a view of ``hidden``) and backward recomputes that chunk's logits, so at most
    one chunk's ``[chunk, V]`` float32 tensors exist at any time.
    """
    if type(head) is nn.Linear:
        logp, entropy = _LinearLogProbs.apply(
            hidden, head.weight, head.bias, targets, temperature, chunk_size, with_entropy
        )
        return logp, (entropy if with_entropy else None)
    recompute = torch.is_grad_enabled() and (
        hidden.requires_grad or any(p.requires_grad for p in head.parameters())
    )
    fn = _chunk_stats if with_entropy else _chunk_logp
    logps, entropies = [], []
    for start in range(0, hidden.shape[0], chunk_size):
        h, y = hidden[start : start + chunk_size], targets[start : start + chunk_size]
        if recompute:
            out = checkpoint(fn, head, h, y, temperature, use_reentrant=False)
        else:
            out = fn(head, h, y, temperature)
        if with_entropy:
            logps.append(out[0])
            entropies.append(out[1])
        else:
            logps.append(out)
    if not logps:  # no scored token at all
        empty = hidden.new_zeros(0, dtype=torch.promote_types(hidden.dtype, torch.float32))
        return empty, (empty if with_entropy else None)
    logp = torch.cat(logps)
    return logp, (torch.cat(entropies) if with_entropy else None)


def _scatter(valid: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Place values [M] at the True entries of valid [B, C]; zeros elsewhere (differentiable)."""
    out = torch.zeros(valid.shape, dtype=values.dtype, device=values.device)
    return out.masked_scatter(valid, values)


def token_logprobs(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    logits_to_keep: int | None = None,
    chunk_size: int = 1024,
    with_entropy: bool = False,
    temperature: float = 1.0,
) -> TokenLogProbs:
    """Log-probs [B, C] (and entropies) of the last C tokens, chunked over token positions.

    Args:
        input_ids: [B, S] long. attention_mask: [B, S] (1 = real token); prompts may be left-padded
            and completions right-padded.
        logits_to_keep: C, the number of trailing tokens scored (default S-1: all but the first).
        chunk_size: token positions (over the whole batch, padding excluded) per lm_head call.
    Returns:
        ``TokenLogProbs(logp [B, C] float32, entropy [B, C] float32 | None)``; 0 where the target
        is padding.
    Models without the ``.model`` / ``.lm_head`` layout fall back to full logits (kept in the
    model's dtype) with the float32 softmax still done chunk by chunk.
    """
    num_keep = _check_inputs(input_ids, attention_mask, logits_to_keep, chunk_size, temperature)
    seq_len = input_ids.shape[1]
    targets = input_ids[:, seq_len - num_keep :]  # [B, C]
    valid = attention_mask[:, seq_len - num_keep :].bool()  # [B, C]
    parts = _split_head(model)
    if parts is None:
        logits = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
        ).logits  # [B, S, V] in model dtype
        inputs, head = logits[:, seq_len - num_keep - 1 : seq_len - 1][valid], nn.Identity()
    else:
        base, head = parts
        hidden = _final_hidden(model, base, input_ids, attention_mask)  # [B, S, H]
        inputs = hidden[:, seq_len - num_keep - 1 : seq_len - 1][valid]  # [M, H]
    logp, entropy = chunked_head_logprobs(
        head,
        inputs,
        targets[valid],
        chunk_size=chunk_size,
        with_entropy=with_entropy,
        temperature=temperature,
    )
    return TokenLogProbs(
        logp=_scatter(valid, logp),
        entropy=_scatter(valid, entropy) if entropy is not None else None,
    )


def naive_token_logprobs(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    logits_to_keep: int | None = None,
    chunk_size: int = 1024,
    with_entropy: bool = False,
    temperature: float = 1.0,
) -> TokenLogProbs:
    """Reference for ``token_logprobs``: full float32 logits, ``log_softmax``, ``gather``.

    Materialises [B, C, V] float32 (``chunk_size`` is accepted and ignored). Same conventions:
    mask-derived positions, temperature in float32, 0 where the target is padding.
    """
    num_keep = _check_inputs(input_ids, attention_mask, logits_to_keep, chunk_size, temperature)
    seq_len = input_ids.shape[1]
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    ).logits
    logits = _upcast(logits[:, seq_len - num_keep - 1 : seq_len - 1]) / temperature  # [B, C, V]
    logp_all = torch.log_softmax(logits, dim=-1)
    targets = input_ids[:, seq_len - num_keep :]
    valid = attention_mask[:, seq_len - num_keep :].bool()
    logp = logp_all.gather(-1, targets[..., None]).squeeze(-1).masked_fill(~valid, 0.0)
    entropy = None
    if with_entropy:
        entropy = -(logp_all.exp() * logp_all).sum(-1).masked_fill(~valid, 0.0)
    return TokenLogProbs(logp=logp, entropy=entropy)
