"""The K inner steps of one rollout: mini-batches, micro-batches, the loss, the guarded step.

Each epoch visits the rollout's N rows in a fresh seeded order, ``minibatch_size`` rows per
optimiser step, so ``K = epochs · N / minibatch_size``. A mini-batch is processed
``microbatch_size`` rows at a time with gradient accumulation — or, with ``microbatch_tokens``,
in length-sorted micro-batches under a padded-token budget
(``llm.update.batching.microbatches``), so short rows are not padded to the longest one; ``policy_loss`` receives the mini-batch's GLOBAL
normalisers (its sequence count, its response-token count, the length budget), so the accumulated
gradient equals the gradient of the whole mini-batch's loss however the rows are split. The logged
metrics are computed once per mini-batch from its detached log-probs, for the same reason.

No-IS ablation (``no_is``): the loss gradient at ``θ_old`` over the whole rollout is computed once
(ratio ≡ 1, so it is ``(1/L_i) A_i Σ_t ∇ log π_old`` with the method's aggregation) and every one of
the K steps applies that same gradient.

On-policy reuse (``reuses_onpolicy_logp``): when the rollout is consumed by exactly one inner
step (one epoch, one mini-batch of all N rows) or by the no-IS pass, that step's forward runs at
``θ = θ_old``, so ``old_logp`` is its own log-probs, detached: the trainer then leaves
``exp.old_logp`` empty and the separate no-grad pass is skipped (TRL does the same when
``num_iterations == 1``). The loss value and its gradient are those of the separate pass up to
float rounding of a differently batched forward (the ratio is exactly 1 instead of 1 ± ulp).

Numerics: a step whose loss or gradient is not finite never reaches the weights: the gradient
is dropped, the optimiser is not stepped, and the step is counted as skipped. A step whose
result is not finite (a finite gradient times a huge rate) is undone: parameters and optimiser
state are put back as they were (``guard_parameters``) and it is counted as skipped too; the
trainer stops the run after ``max_consecutive_skips`` skipped steps in a row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from llm.parallel.comm import Comm, as_comm
from llm.rollout.experience import Experience
from llm.update.batching import collate, forward_logprobs, lockstep_microbatches, padded_widths
from ticgrpo import policy_loss


@dataclass
class UpdateResult:
    """What the inner steps did: averaged ``policy_loss`` metrics and step counts."""

    metrics: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    skipped: int = 0
    trailing_skips: int = 0  # skipped steps since the last applied one (all of them if none)
    entropy: torch.Tensor | None = None  # [N, T] at θ_old, when the old log-probs were reused


def reuses_onpolicy_logp(cfg) -> bool:
    """True when the separate old-log-prob pass is redundant and ``cfg`` allows skipping it.

    Redundant: every gradient of the rollout is taken at ``θ_old`` — under ``no_is`` (its one
    pass is at ``θ_old`` by construction), or with ``epochs_per_rollout = 1`` and one mini-batch
    holding all ``N = P·G`` rows (``minibatch_size`` 0 or N; N is global under data parallel).
    """
    if not cfg.reuse_onpolicy_logp:
        return False
    n = cfg.prompts_per_step * cfg.group_size
    return cfg.no_is or (cfg.epochs_per_rollout == 1 and cfg.minibatch_size in (0, n))


class MetricMean:
    """Running aggregate of metric dicts: min of ``*_min``, max of ``*_max``, mean otherwise."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            if not math.isfinite(value):
                continue
            if key not in self.sums:
                self.sums[key], self.counts[key] = value, 1
            elif key.endswith("_min"):
                self.sums[key] = min(self.sums[key], value)
            elif key.endswith("_max"):
                self.sums[key] = max(self.sums[key], value)
            else:
                self.sums[key] += value
                self.counts[key] += 1

    def result(self) -> dict[str, float]:
        return {
            k: v if k.endswith(("_min", "_max")) else v / self.counts[k]
            for k, v in self.sums.items()
        }


def loss_options(cfg, *, num_seqs: int, num_tokens: int) -> dict:
    """``policy_loss`` keyword arguments for the config, with explicit global normalisers."""
    options = dict(
        method=cfg.method,
        eps_low=cfg.eps_low,
        eps_high=cfg.eps_high,
        aggregation=cfg.aggregation,
        num_seqs=num_seqs,
        num_tokens=max(num_tokens, 1),
        max_len=cfg.max_new_tokens,
        log_ratio_cap=cfg.log_ratio_cap,
    )
    if cfg.method == "tic_grpo":
        options["tic_clip"] = cfg.tic_clip
    if cfg.beta > 0:
        options.update(beta=cfg.beta, kl_estimator=cfg.kl_estimator)
    return options


def _minibatch_loss(
    model,
    exp: Experience,
    rows: torch.Tensor,
    cfg,
    *,
    pad_id: int,
    inject_nan: bool,
    at_old: bool,
    acc: MetricMean,
    comm: Comm | None = None,
    entropy: torch.Tensor | None = None,
) -> float:
    """Accumulate ``∇ loss`` of the rows (micro-batch by micro-batch); return the loss value.

    ``at_old``: use the current log-probs, detached, as ``old_logp`` (ratio ≡ 1: the no-IS pass
    and the on-policy single step). ``entropy`` ([N, T], optional) receives the rows' per-token
    entropies from the same forward (0 on padding).
    ``comm`` (``llm.parallel.comm.Comm``; None: a world of one): ``rows`` are this rank's share
    of the mini-batch; the normalisers are the sums over ranks and the returned value is this
    rank's part of the global loss (the parts sum to it).
    """
    comm = as_comm(comm)
    device = next(model.parameters()).device
    weights = exp.loss_weights  # [N] 0 for rows excluded from the loss (mask_truncated)
    num_seqs, num_tokens = len(rows), int((exp.lengths[rows] * (weights[rows] > 0)).sum())
    # e.g. DAPO's token_mean divides by the token count of ALL ranks
    num_seqs, num_tokens = (int(v) for v in comm.sum([num_seqs, num_tokens]))
    options = loss_options(cfg, num_seqs=num_seqs, num_tokens=num_tokens)
    # detached log-probs of all the rows, in the order of ``rows``, for the metrics
    seen = torch.zeros((len(rows), int(exp.lengths[rows].max())), dtype=torch.float32)
    where = {int(r): i for i, r in enumerate(rows.tolist())}
    total, laid, real = 0.0, 0, 0
    parts = lockstep_microbatches(exp, rows, max_rows=cfg.microbatch_size,
                                  max_tokens=cfg.microbatch_tokens, comm=comm)  # fmt: skip
    for part in parts:
        batch = collate(exp, part, pad_id, device)
        # counted on the host from the rows' lengths: no device sync on the hot path
        laid += batch.attention_mask.numel()
        real += int(padded_widths(exp, part).sum())
        fwd = forward_logprobs(
            model, batch, chunk_size=cfg.logprob_chunk_size, with_entropy=entropy is not None
        )
        logp, width = fwd.logp, batch.mask.shape[1]  # [m, T]
        if entropy is not None:
            entropy[batch.rows, :width] = (fwd.entropy.detach() * batch.mask).float().cpu()
        seen[[where[int(r)] for r in part.tolist()], :width] = logp.detach().float().cpu()
        # detached before any injected NaN, like the separately computed old log-probs
        old = logp.detach() if at_old else exp.old_logp[batch.rows, :width].to(device)
        if inject_nan:
            logp = logp + float("nan")
        mask = batch.mask & (weights[batch.rows] > 0).to(device)[:, None]  # [m, T]
        if cfg.beta > 0:
            options["ref_logp"] = exp.ref_logp[batch.rows, :width].to(device)
        out = policy_loss(logp, old, exp.advantages[batch.rows].to(device), mask, **options)
        out.loss.backward()
        total += float(out.loss.detach())
    acc.add(_minibatch_metrics(exp, rows, seen, options, at_old=at_old, inject_nan=inject_nan))
    acc.add({"update/padding_frac": 1.0 - real / laid})  # tokens laid out that are padding
    return total


@torch.no_grad()
def _minibatch_metrics(
    exp: Experience,
    rows: torch.Tensor,
    logp: torch.Tensor,
    options: dict,
    *,
    at_old: bool,
    inject_nan: bool,
) -> dict[str, float]:
    """``policy_loss`` metrics of the whole mini-batch from its detached log-probs ``[m, T]``.

    Computed once over all ``rows`` rather than averaged over micro-batches, so the logged
    values (clip fractions, ESS, ``loss/policy`` …) do not depend on how the rows were split.
    """
    width = logp.shape[1]
    old = logp if at_old else exp.old_logp[rows, :width].float()
    mask = torch.arange(width)[None, :] < exp.lengths[rows][:, None]  # [m, T]
    mask &= (exp.loss_weights[rows] > 0)[:, None]
    if "ref_logp" in options:
        options = {**options, "ref_logp": exp.ref_logp[rows, :width].float()}
    if inject_nan:
        logp = logp + float("nan")
    return policy_loss(logp, old, exp.advantages[rows].float(), mask, **options).metrics


def _guarded_step(
    model, optimizer, scheduler, cfg, loss: float, comm: Comm | None = None, probe=None
) -> tuple[bool, float, float]:
    """Clip and apply the accumulated gradient unless the loss or the gradient is non-finite.

    Returns (applied, pre-clip global gradient norm, loss). The loss is summed over the ranks of
    ``comm`` (None: a world of one) and the flag "this rank saw a non-finite value" too, so every
    rank takes the same decision (the norm of FSDP's sharded gradients is already global).
    """
    params = [p for p in model.parameters() if p.grad is not None]
    max_norm = cfg.max_grad_norm if cfg.max_grad_norm > 0 else math.inf
    norm_t = torch.nn.utils.clip_grad_norm_(params, max_norm) if params else 0.0
    if hasattr(norm_t, "full_tensor"):  # a DTensor under FSDP2
        norm_t = norm_t.full_tensor()
    norm = float(norm_t)
    applied = math.isfinite(loss) and math.isfinite(norm)
    loss, bad = as_comm(comm).sum([loss, float(not applied)])
    applied = bad == 0 and math.isfinite(loss)
    if applied:
        applied = _checked_step(model, optimizer, cfg, comm, probe)
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    return applied, norm, loss


def _local(p: torch.Tensor) -> torch.Tensor:
    """This rank's part of a parameter (a DTensor's local shard under FSDP2), sharing storage."""
    return p.to_local() if hasattr(p, "to_local") else p


@torch.no_grad()
def _checked_step(model, optimizer, cfg, comm=None, probe=None) -> bool:
    """``optimizer.step()``, undone when its result is not finite (e.g. a huge lr).

    With ``cfg.guard_parameters`` the parameters and the optimiser state are copied before
    the step and put back when, on any rank, a parameter is not finite or the stepped model's
    last-position logits on ``probe`` (a one-row ``Batch``) are not (finite weights so large
    that the forward overflows would crash the next rollout's sampling). Returns whether the
    step stands. Costs one copy of the parameters and optimiser state in memory and a one-row
    forward pass.
    """
    if not cfg.guard_parameters:
        optimizer.step()
        return True
    params = [p for p in model.parameters() if p.requires_grad]
    saved = [
        (_local(p).clone(), {k: v.clone() if torch.is_tensor(v) else v
                             for k, v in optimizer.state.get(p, {}).items()})
        for p in params
    ]  # fmt: skip
    optimizer.step()
    finite = torch.stack([torch.isfinite(_local(p)).all() for p in params]).all()
    if probe is not None:
        logits = model(
            input_ids=probe.input_ids,
            attention_mask=probe.attention_mask,
            logits_to_keep=1,
            use_cache=False,
        ).logits  # [1, 1, V]
        finite &= torch.isfinite(logits).all()  # fmt: skip
    bad = as_comm(comm).sum([float(not bool(finite))])[0]
    if bad == 0:
        return True
    for p, (value, state) in zip(params, saved):
        _local(p).copy_(value)
        if state:
            optimizer.state[p] = state
        else:
            optimizer.state.pop(p, None)
    return False


def inner_steps(
    model,
    optimizer,
    scheduler,
    exp: Experience,
    cfg,
    *,
    step: int,
    pad_id: int,
    inject_nan: bool = False,
    comm: Comm | None = None,
) -> UpdateResult:
    """Run the K inner steps of rollout ``step`` (see module docstring).

    ``comm`` (``llm.parallel.comm.Comm``; None: a world of one; ``exp`` this rank's whole
    groups): each optimiser step takes ``minibatch_size / W`` rows of every rank, drawn from a
    per-rank shuffle seeded by ``(seed, step, rank)``; the global mini-batch is the union, its
    normalisers global.
    """
    comm = as_comm(comm)
    reuse = exp.old_logp is None  # the trainer skipped the separate pass: θ = θ_old here
    if reuse and not reuses_onpolicy_logp(cfg):
        raise ValueError(
            "exp.old_logp is missing, but the inner steps leave θ_old after the first step "
            "(epochs_per_rollout > 1 or several mini-batches): compute it with "
            "llm.update.batching.sequence_logprobs"
        )
    n = len(exp)
    mini = (cfg.minibatch_size or n * comm.world_size) // comm.world_size  # this rank's rows
    num_steps = cfg.epochs_per_rollout * (n // mini)
    acc, result = MetricMean(), UpdateResult()
    lr = float(optimizer.param_groups[0]["lr"])  # the rate of these steps (before the schedule)
    if reuse:
        result.entropy = torch.zeros((n, int(exp.lengths.max())), dtype=torch.float32)
    model.train()
    optimizer.zero_grad(set_to_none=True)
    device = next(model.parameters()).device
    probe = collate(exp, torch.arange(1), pad_id, device) if cfg.guard_parameters else None
    if cfg.no_is:
        loss = _minibatch_loss(
            model, exp, torch.arange(n), cfg, pad_id=pad_id, inject_nan=inject_nan, at_old=True,
            acc=acc, comm=comm, entropy=result.entropy,
        )  # fmt: skip
        grads = [(p, p.grad.detach().clone()) for p in model.parameters() if p.grad is not None]
        for _ in range(num_steps):
            for p, g in grads:
                p.grad = g.clone()
            applied, norm, total = _guarded_step(
                model, optimizer, scheduler, cfg, loss, comm, probe
            )
            _count(result, acc, applied, norm, total)
        return _finish(result, acc, lr)
    seed = cfg.seed * 1_000_003 + step
    gen = torch.Generator().manual_seed(comm.seed(seed))
    for _epoch in range(cfg.epochs_per_rollout):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, mini):
            rows = order[start : start + mini]
            loss = _minibatch_loss(
                model, exp, rows, cfg, pad_id=pad_id, inject_nan=inject_nan, at_old=reuse,
                acc=acc, comm=comm, entropy=result.entropy,
            )  # fmt: skip
            applied, norm, total = _guarded_step(
                model, optimizer, scheduler, cfg, loss, comm, probe
            )
            _count(result, acc, applied, norm, total)
    return _finish(result, acc, lr)


def _count(result: UpdateResult, acc: MetricMean, applied: bool, norm: float, loss: float) -> None:
    result.steps += 1
    result.skipped += not applied
    result.trailing_skips = 0 if applied else result.trailing_skips + 1
    acc.add({"grad_norm": norm, "loss": loss})


def _finish(result: UpdateResult, acc: MetricMean, lr: float) -> UpdateResult:
    result.metrics = acc.result()
    result.metrics["lr"] = lr
    result.metrics["update/inner_steps"] = float(result.steps)
    result.metrics["update/skipped_inner_steps"] = float(result.skipped)
    return result
