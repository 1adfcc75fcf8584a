"""Rollout rows as model inputs: collate, micro-batches, and the no-grad log-prob pass.

``collate`` lays out any subset of an ``Experience``'s rows: prompts left-padded to the subset's
longest prompt ``P_max``, completions right-padded to its longest completion ``T``, so
``S = P_max + T`` and the last ``T`` positions are the completions (scored with
``token_logprobs(..., logits_to_keep=T)``). ``microbatches`` cuts rows into micro-batches, by row
count or (``max_tokens > 0``) length-sorted under a budget of padded tokens
``rows · (longest prompt + longest completion)``; ``lockstep_microbatches`` makes data-parallel
ranks agree on their number. ``sequence_logprobs`` runs the training forward pass without
gradients (old / reference log-probs, entropy) and writes each row back at its own index.

Shapes: ``N`` rollout rows, ``m`` rows of a subset; a subset's tensors use its own widths, so the
loss normalisers are passed explicitly (``llm.update.inner_steps``), never read off a
micro-batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llm.parallel.comm import Comm, as_comm
from llm.rollout.experience import Experience
from llm.update.logprobs import token_logprobs


@dataclass
class Batch:
    """Model inputs for a subset of rows: prompts left-padded, completions right-padded."""

    input_ids: torch.Tensor  # [m, S]
    attention_mask: torch.Tensor  # [m, S]
    mask: torch.Tensor  # [m, T] bool, True on completion tokens
    rows: torch.Tensor  # [m] indices into the rollout


def collate(exp: Experience, rows: torch.Tensor, pad_id: int, device) -> Batch:
    """Inputs for ``rows`` of the rollout: ``[m, S]`` ids/attention, ``[m, T]`` completion mask.

    ``S = P_max + T`` with ``P_max`` / ``T`` the subset's longest prompt / completion, so the last
    ``T`` positions hold the completions (``token_logprobs(..., logits_to_keep=T)`` scores them).
    """
    prompts = [exp.gen.prompt_ids[i] for i in rows.tolist()]
    comps = [exp.gen.completion_ids[i] for i in rows.tolist()]
    p_max, t_max = max(map(len, prompts)), max(map(len, comps))
    m = len(prompts)
    ids = torch.full((m, p_max + t_max), pad_id, dtype=torch.long)
    attn = torch.zeros((m, p_max + t_max), dtype=torch.long)
    mask = torch.zeros((m, t_max), dtype=torch.bool)
    for i, (p, c) in enumerate(zip(prompts, comps)):
        ids[i, p_max - len(p) : p_max] = torch.tensor(p, dtype=torch.long)
        ids[i, p_max : p_max + len(c)] = torch.tensor(c, dtype=torch.long)
        attn[i, p_max - len(p) : p_max + len(c)] = 1
        mask[i, : len(c)] = True
    return Batch(ids.to(device), attn.to(device), mask.to(device), rows)


def padded_widths(exp: Experience, rows: torch.Tensor) -> torch.Tensor:
    """``[m]`` prompt + completion length of each of ``rows`` (tokens the row itself occupies)."""
    prompts, comps = exp.gen.prompt_ids, exp.gen.completion_ids
    return torch.tensor([len(prompts[i]) + len(comps[i]) for i in rows.tolist()], dtype=torch.long)


def microbatches(
    exp: Experience, rows: torch.Tensor, *, max_rows: int, max_tokens: int = 0, count: int = 0
) -> list[torch.Tensor]:
    """Split ``rows`` ``[m]`` into micro-batches (lists of rollout indices).

    ``max_tokens = 0``: consecutive runs of ``max_rows`` rows (``0``: all), in the given order.
    ``max_tokens > 0`` (length-aware): rows sorted by prompt + completion length (longest first,
    ties in the given order), then cut greedily so that each micro-batch's PADDED area
    ``rows · (longest prompt + longest completion)`` stays within ``max_tokens`` (a single row
    longer than the budget goes alone) and, when ``max_rows > 0``, it has at most ``max_rows``
    rows. ``collate`` pads each micro-batch only to its own longest prompt and completion, so
    similar lengths together waste little padding. Every row appears exactly once.

    ``count > 0``: exactly ``count`` micro-batches, at least as many as the rules above give
    (``ValueError`` otherwise, or if ``count > m``): the micro-batch with the largest padded area
    is halved (in its order) until there are ``count``. Data-parallel ranks pass the largest
    count over all ranks, so that every rank runs the same number of forward passes (FSDP's
    collectives must run in lockstep) while each stays within the budget.
    """
    parts = _split(exp, rows, max_rows=max_rows, max_tokens=max_tokens)
    return _subdivide(exp, parts, count) if count > 0 else parts


def lockstep_microbatches(
    exp: Experience,
    rows: torch.Tensor,
    *,
    max_rows: int,
    max_tokens: int = 0,
    comm: Comm | None = None,
) -> list[torch.Tensor]:
    """``microbatches``; with a token budget, cut into the largest count any rank of ``comm``
    needs (None: a world of one, whose own count it is), so that all ranks run the same number
    of forward passes."""
    parts = _split(exp, rows, max_rows=max_rows, max_tokens=max_tokens)
    if max_tokens <= 0:
        return parts  # row-count splits of equal per-rank shares already agree across ranks
    return _subdivide(exp, parts, max(int(c) for c in as_comm(comm).gather([len(parts)])))


def _subdivide(exp: Experience, parts: list[torch.Tensor], count: int) -> list[torch.Tensor]:
    """Halve the micro-batch with the largest padded area until there are exactly ``count``."""
    rows = sum(len(q) for q in parts)
    if count < len(parts) or count > rows:
        raise ValueError(
            f"cannot cut {rows} rows into exactly {count} micro-batches: the budget already "
            f"needs {len(parts)}"
        )
    parts = list(parts)
    while len(parts) < count:
        areas = [_padded_area(exp, q) if len(q) > 1 else -1 for q in parts]
        i = max(range(len(parts)), key=areas.__getitem__)
        half = (len(parts[i]) + 1) // 2
        parts[i : i + 1] = [parts[i][:half], parts[i][half:]]
    return parts


def _padded_area(exp: Experience, rows: torch.Tensor) -> int:
    """Tokens ``collate`` lays out for ``rows``: rows · (longest prompt + longest completion)."""
    idx = rows.tolist()
    p_max = max(len(exp.gen.prompt_ids[i]) for i in idx)
    c_max = max(len(exp.gen.completion_ids[i]) for i in idx)
    return len(idx) * (p_max + c_max)


def _split(exp: Experience, rows: torch.Tensor, *, max_rows: int, max_tokens: int):
    """``microbatches`` without ``count``."""
    m = len(rows)
    if max_tokens <= 0:
        step = max_rows or m
        return [rows[s : s + step] for s in range(0, m, step)]
    order = torch.argsort(padded_widths(exp, rows), descending=True, stable=True)
    sorted_rows = rows[order]
    p_len = [len(exp.gen.prompt_ids[i]) for i in sorted_rows.tolist()]
    c_len = [len(exp.gen.completion_ids[i]) for i in sorted_rows.tolist()]
    out, start, p_max, c_max = [], 0, 0, 0
    for i in range(m):
        p_new, c_new = max(p_max, p_len[i]), max(c_max, c_len[i])
        count = i - start + 1
        full = (max_rows and count > max_rows) or count * (p_new + c_new) > max_tokens
        if full and count > 1:
            out.append(sorted_rows[start:i])
            start, p_new, c_new = i, p_len[i], c_len[i]
        p_max, c_max = p_new, c_new
    out.append(sorted_rows[start:])
    return out


def forward_logprobs(model, batch: Batch, *, chunk_size: int, with_entropy: bool = False):
    """``token_logprobs`` of the batch's completion tokens: ``[m, T]`` (and entropy)."""
    return token_logprobs(
        model,
        batch.input_ids,
        batch.attention_mask,
        logits_to_keep=batch.mask.shape[1],
        chunk_size=chunk_size,
        with_entropy=with_entropy,
    )


@torch.no_grad()
def sequence_logprobs(
    model,
    exp: Experience,
    *,
    pad_id: int,
    microbatch: int,
    chunk_size: int,
    with_entropy: bool,
    microbatch_tokens: int = 0,
    comm: Comm | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs ``[N, T]`` of every completion token under ``model`` (float32, 0 on padding),
    and per-token entropies ``[N, T]`` when asked; computed ``microbatch`` rows at a time, or
    (``microbatch_tokens > 0``) in length-sorted micro-batches of at most that many padded
    tokens (``microbatches``); either way each row lands at its own index. ``comm`` (1 or W
    ranks): every rank runs the same number of micro-batches (``lockstep_microbatches``)."""
    n, t_max = len(exp), int(exp.lengths.max())
    device = next(model.parameters()).device
    logp = torch.zeros((n, t_max), dtype=torch.float32)
    ent = torch.zeros((n, t_max), dtype=torch.float32) if with_entropy else None
    parts = lockstep_microbatches(
        exp, torch.arange(n), max_rows=microbatch, max_tokens=microbatch_tokens, comm=comm
    )
    for rows in parts:
        batch = collate(exp, rows, pad_id, device)
        out = forward_logprobs(model, batch, chunk_size=chunk_size, with_entropy=with_entropy)
        width = batch.mask.shape[1]
        logp[rows, :width] = out.logp.float().cpu() * batch.mask.cpu()
        if ent is not None:
            ent[rows, :width] = out.entropy.float().cpu() * batch.mask.cpu()
    return logp, ent
