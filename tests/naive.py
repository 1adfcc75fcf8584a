"""Plain-loop reference implementations of the estimators, written straight from SPEC section 3.

Slow and obvious on purpose: one sequence at a time, one token at a time, Python floats where
possible. The fast code in ``ticgrpo`` must agree with these.
"""

from __future__ import annotations

import math

import torch


def naive_advantages(
    rewards: list[float], g: int, mode: str, eps: float = 1e-6, lengths=None, sample=True
):
    out = []
    for start in range(0, len(rewards), g):
        grp = rewards[start : start + g]
        if mode == "length_corrected":
            grp = [r / lengths[start + j] for j, r in enumerate(grp)]
        mean = sum(grp) / g
        if max(grp) == min(grp) and mode != "none":
            out += [0.0] * g
            continue
        for j, r in enumerate(grp):
            if mode == "none":
                out.append(rewards[start + j])
            elif mode == "mean":
                out.append(r - mean)
            elif mode == "rloo":
                out.append(r - (sum(grp) - r) / (g - 1))
            else:
                var = sum((x - mean) ** 2 for x in grp) / (g - 1 if sample else g)
                out.append((r - mean) / (math.sqrt(var) + eps))
    return out


def _clip(x, lo, hi):
    return max(lo, min(hi, x))


#: naive methods that divide by the length budget T (``max_len`` required)
BUDGET_METHODS = ("tic_grpo", "grpo2", "dr_grpo")


def naive_objective(
    logp,
    old_logp,
    adv,
    mask,
    method,
    eps_low=0.2,
    eps_high=0.2,
    tic_clip="truncate",
    max_len=None,
    token_weights=None,
    tic_earlier=False,
):
    """Objective (to maximise) as a differentiable scalar, built one token at a time.

    ``token_weights`` (optional ``[N, T]``) multiply each token's term, read only on response
    tokens. ``tic_earlier``: TIC-GRPO's v1–v4 normalisation (mean over sequences, no 1/T).
    """
    n, t = logp.shape
    if method in BUDGET_METHODS and not (method == "tic_grpo" and tic_earlier) and max_len is None:
        raise ValueError(f"{method} needs max_len")
    seq_terms, tok_terms, total_tokens = [], [], 0
    for i in range(n):
        idx = [j for j in range(t) if bool(mask[i, j])]
        total_tokens += len(idx)
        a = float(adv[i])
        rhos = [logp[i, j] - old_logp[i, j] for j in idx]
        one = torch.tensor(1.0, dtype=logp.dtype)
        terms = []
        if method in ("grpo", "dapo", "dr_grpo"):
            for r in rhos:
                w = torch.exp(r)
                terms.append(torch.minimum(w * a, torch.clamp(w, 1 - eps_low, 1 + eps_high) * a))
        elif method == "grpo2":  # v5 Eq. 14: up-only truncation of each token ratio
            terms = [torch.clamp(torch.exp(r), max=1 + eps_high) * a for r in rhos]
        elif method == "tic_grpo":
            w = torch.exp(sum(rhos)) if rhos else one
            trunc = torch.clamp(w, max=1 + eps_high) * a
            term = trunc if tic_clip == "truncate" else torch.minimum(w * a, trunc)
            terms = [term] * len(idx)
        elif method == "grpo_traj_is":  # v5 Table 2: trajectory ratio in GRPO's two-sided clip
            w = torch.exp(sum(rhos)) if rhos else one
            term = torch.minimum(w * a, torch.clamp(w, 1 - eps_low, 1 + eps_high) * a)
            terms = [term] * len(idx)
        elif method == "gspo":
            s = torch.exp(sum(rhos) / len(rhos)) if rhos else one
            term = torch.minimum(s * a, torch.clamp(s, 1 - eps_low, 1 + eps_high) * a)
            terms = [term] * len(idx)
        elif method == "pg":
            terms = [torch.exp(logp[i, j] - logp[i, j].detach()) * a for j in idx]
        else:
            raise ValueError(method)
        if token_weights is not None:
            terms = [x * float(token_weights[i, j]) for x, j in zip(terms, idx)]
        tok_terms += terms
        s = sum(terms) if terms else torch.zeros((), dtype=logp.dtype)
        seq_terms.append((s, max(len(idx), 1)))
    if method == "dapo":
        return sum(tok_terms) / max(total_tokens, 1)
    if method in ("dr_grpo", "grpo2"):
        return sum(s for s, _ in seq_terms) / (n * max_len)
    seq_mean = sum(s / length for s, length in seq_terms) / n
    if method == "tic_grpo" and not tic_earlier:
        return seq_mean / max_len
    return seq_mean
