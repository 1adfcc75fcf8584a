"""The per-chunk ``lm_head`` math of ``llm.update.logprobs``: logits → target log-prob, entropy.

For one chunk of ``M`` scored positions with final hidden states ``h`` ``[M, H]`` and targets
``y`` ``[M]``, with ``z = lm_head(h) / τ`` in float32 (float64 for a float64 model):

- ``logp = z_y − logsumexp(z)``;
- ``entropy = logsumexp(z) − Σ_v softmax(z)_v z_v`` (nats, per position; no normaliser: averaging
  over tokens is the caller's).

``_LinearLogProbs`` is the fused autograd kernel for a plain ``nn.Linear`` head (one reused
``[chunk, V]`` buffer, backward recomputes the logits); ``_chunk_stats`` / ``_chunk_logp`` are the
same formulas for any other head, which ``llm.update.logprobs.chunked_head_logprobs`` wraps in
activation checkpointing. ``naive_token_logprobs`` (full logits, ``log_softmax``, ``gather``) is the reference
both are tested against (``tests/test_logprobs.py``).
"""

from __future__ import annotations

import torch
from torch import nn


def _upcast(logits: torch.Tensor) -> torch.Tensor:
    """Logits in float32 or better (a float64 model keeps float64, for exact tests)."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def _chunk_stats(
    head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of ``targets`` and entropy for one chunk: hidden [M, H], targets [M] -> ([M], [M]).

    ``logp = z_y - logsumexp(z)``, ``entropy = logsumexp(z) - Σ_v softmax(z)_v z_v`` with
    ``z = lm_head(h) / temperature`` in float32.
    """
    logits = _upcast(head(hidden))  # [M, V]
    if temperature != 1.0:
        logits = logits / temperature
    lse = torch.logsumexp(logits, dim=-1)  # [M]
    logp = logits.gather(-1, targets[:, None]).squeeze(-1) - lse
    entropy = lse - (torch.softmax(logits, dim=-1) * logits).sum(-1)
    return logp, entropy


def _chunk_logp(
    head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Log-prob only (skips the softmax pass the entropy needs): [M, H], [M] -> [M]."""
    logits = _upcast(head(hidden))
    if temperature != 1.0:
        logits = logits / temperature
    return logits.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


class _LinearLogProbs(torch.autograd.Function):
    """Fused ``lm_head`` (an ``nn.Linear``) + log-softmax + gather (+ entropy), chunk by chunk.

    forward(hidden [M, H], weight [V, H], bias [V] | None, targets [M]) -> logp [M], entropy [M]
    (entropy is empty when not asked for). Per chunk of rows, ``z = (h Wᵀ + b) / τ`` is written
    into one reused ``[chunk, V]`` buffer and turned in place into ``lse``, ``z_y`` and
    ``H = log s - Σ e log e / s`` (``e = exp(z - max)``, ``s = Σ e``). Backward recomputes ``z``
    into the same kind of buffer and forms, in place,
    ``∂/∂z = g_logp (onehot_y - p) - g_ent p (log p + H)``, then ``∂h = ∂z W / τ`` and
    ``∂W += ∂zᵀ h / τ``. Memory beyond the inputs: one or two ``[chunk, V]`` float32 buffers.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, temperature, chunk_size, with_entropy):
        out_dtype = torch.promote_types(hidden.dtype, torch.float32)
        rows = hidden.shape[0]
        logp = hidden.new_empty(rows, dtype=out_dtype)
        entropy = hidden.new_empty(rows if with_entropy else 0, dtype=out_dtype)
        lse = hidden.new_empty(rows, dtype=out_dtype)
        buf = None
        for start in range(0, rows, chunk_size):
            sl = slice(start, start + chunk_size)
            buf, z = _logits_into(buf, hidden[sl], weight, bias, temperature, out_dtype)
            z_y = z.gather(1, targets[sl, None]).squeeze(1)
            zmax = z.max(dim=1).values
            e = z.sub_(zmax[:, None]).exp_()  # in place: z is gone from here on
            total = e.sum(dim=1)
            lse[sl] = zmax + total.log()
            logp[sl] = z_y - lse[sl]
            if with_entropy:
                entropy[sl] = total.log() - torch.xlogy(e, e).sum(dim=1) / total
        ctx.save_for_backward(hidden, weight, bias, targets, lse, entropy)
        ctx.temperature, ctx.chunk_size, ctx.with_entropy = temperature, chunk_size, with_entropy
        ctx.mark_non_differentiable(lse)
        # An output the loss does not use (often the entropy) then arrives in backward as None,
        # not as zeros, so backward skips that branch's extra [chunk, V] pass.
        ctx.set_materialize_grads(False)
        return logp, entropy

    @staticmethod
    def backward(ctx, g_logp, g_ent):
        hidden, weight, bias, targets, lse, entropy = ctx.saved_tensors
        tau = ctx.temperature
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        out_dtype = lse.dtype
        grad_h = torch.empty_like(hidden) if need_h else None
        acc_dtype = torch.promote_types(weight.dtype, torch.float32)
        grad_w = (
            torch.zeros(weight.shape, dtype=acc_dtype, device=weight.device) if need_w else None
        )
        grad_b = torch.zeros(bias.shape, dtype=acc_dtype, device=bias.device) if need_b else None
        use_ent = ctx.with_entropy and g_ent is not None
        buf = None
        for start in range(0, hidden.shape[0], ctx.chunk_size):
            sl = slice(start, start + ctx.chunk_size)
            g = g_logp[sl].to(out_dtype) if g_logp is not None else lse.new_zeros(lse[sl].shape)
            buf, z = _logits_into(buf, hidden[sl], weight, bias, tau, out_dtype)
            logp_all = z.sub_(lse[sl, None])  # log p, in place
            if use_ent:
                p = logp_all.exp()
                coef = logp_all.add_(entropy[sl, None]).mul_(g_ent[sl, None].to(out_dtype))
                grad_z = coef.add_(g[:, None]).mul_(p).neg_()
                del p
            else:
                grad_z = logp_all.exp_().mul_(-g[:, None])
            grad_z.scatter_add_(1, targets[sl, None], g[:, None])
            grad_z = grad_z.div_(tau).to(weight.dtype)  # [c, V]
            if need_h:
                grad_h[sl] = grad_z @ weight
            if need_w:
                grad_w.add_(grad_z.t() @ hidden[sl])
            if need_b:
                grad_b.add_(grad_z.sum(dim=0))
        grad_w = grad_w.to(weight.dtype) if need_w else None
        grad_b = grad_b.to(bias.dtype) if need_b else None
        return grad_h, grad_w, grad_b, None, None, None, None


def _logits_into(buf, hidden, weight, bias, temperature, out_dtype):
    """z = (hidden Wᵀ + b) / τ as out_dtype [c, V], reusing buf when the dtypes allow."""
    rows = hidden.shape[0]
    if weight.dtype == out_dtype:
        if buf is None or buf.shape[0] < rows:
            buf = hidden.new_empty(rows, weight.shape[0], dtype=out_dtype)
        z = buf[:rows]
        if bias is None:
            torch.mm(hidden, weight.t(), out=z)
        else:
            torch.addmm(bias, hidden, weight.t(), out=z)
    else:  # low-precision model: matmul in its dtype, softmax in float32
        z = torch.nn.functional.linear(hidden, weight, bias).to(out_dtype)
    if temperature != 1.0:
        z.div_(temperature)
    return buf, z
