"""The toy training loop: the LLM trainer's skeleton on an enumerated MDP, vectorised over runs.

    for n in 1 … N:
        θ_old ← θ                                       (refresh; θ_{n,0})
        draw K·b prompts, G responses each, from π_old  (rollout; b = prompts_per_step)
        A ← group_advantages(rewards, G, mode)          (advantages)
        for k in 0 … K−1:                               (v5 Eq. 10–11: mini-batch k of the rollout)
            log ‖∇J(θ_{n,k})‖² (exact)                  (stationarity S, when log_inner)
            θ ← θ + η · scale · (−∇ loss_k(θ; θ_old, A))
        log exact J(θ), ‖∇J(θ)‖², M_n, σ_n²

With ``prompts_per_step=None`` the rollout holds every prompt once and each inner step uses all of
it (the old lab's loop). ``B`` independent runs (seeds × step sizes) share one ``policy_loss``
call per inner step: rows are stacked ``[B·b·G, T]`` with ``num_seqs = b·G`` (the rows of one
run), so each run's gradient is exactly the one it would get alone. Variants and their
normalisers come from ``toy.variants``. ``no_is`` (v5 Fig. 1): each inner step uses the ``pg``
gradient evaluated at ``θ_old`` on its own mini-batch (no ratio).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch

from ticgrpo import METHODS, group_advantages, policy_loss

from . import variants
from .mdp import DTYPE, init_theta, objective, policy_gradient, sampled_token_logp, token_logp


@dataclass
class TrainConfig:
    """One toy training configuration (every field is saved beside the results)."""

    method: str = "grpo"
    """a ``toy.variants`` variant (grpo, grpo2, grpo_traj_is, tic_grpo, gspo, no_is) or a core row"""
    adv_mode: str | None = None
    """advantage mode; ``None`` reads the method's core row"""
    group_size: int = 8
    """G, responses per prompt"""
    iterations: int = 50
    """N, number of rollouts (π_old refreshes)"""
    inner_steps: int = 4
    """K, inner updates per rollout"""
    prompts_per_step: int | None = None
    """b, prompts per mini-batch (the rollout has K·b, drawn uniformly); None: all, every step"""
    lrs: tuple[float, ...] = (0.5,)
    """step sizes η; every η is run for every seed"""
    optimizer: str = "sga"
    """``sga`` (plain stochastic gradient ascent, as in v5) or ``adam``"""
    seeds: tuple[int, ...] = (0, 1, 2)
    """seeds of the initial θ (the rollouts use one generator seeded from the first)"""
    init_scale: float = 0.5
    """initial parameters ~ N(0, init_scale²)"""
    eps_low: float | None = None
    """clip width; ``None`` reads the method's row"""
    eps_high: float | None = None
    """clip width; ``None`` reads the method's row"""
    loss_options: dict = field(default_factory=dict)
    """extra ``policy_loss`` options"""
    log_inner: bool = False
    """log the exact ‖∇J(θ_{n,k})‖² at every inner step (for S), and M_n, σ_n²"""

    def resolved(self, horizon: int) -> dict:
        """The configuration with the variant's call and row defaults filled in (JSON-ready)."""
        method, opts, scale = variants.call(self.method, horizon)
        row = METHODS[method]
        out = asdict(self)
        out["adv_mode"] = self.adv_mode or row.advantage_mode
        out["eps_low"] = row.eps_low if self.eps_low is None else self.eps_low
        out["eps_high"] = row.eps_high if self.eps_high is None else self.eps_high
        out["lrs"], out["seeds"] = list(self.lrs), list(self.seeds)
        out["core_method"], out["scale"] = method, scale
        out["core_options"] = {**opts, **self.loss_options}
        return out


class _Optimiser:
    """Per-entry SGA or Adam ascent on ``θ [B, ...]`` with per-run step sizes ``η [B]``."""

    def __init__(self, kind: str, lrs: torch.Tensor, shape: torch.Size):
        if kind not in ("sga", "adam"):
            raise ValueError(f"unknown optimizer {kind!r}; expected 'sga' or 'adam'")
        self.kind, self.lr = kind, lrs.view(-1, *([1] * (len(shape) - 1)))
        self.m, self.v, self.t = torch.zeros(shape, dtype=DTYPE), torch.zeros(shape, dtype=DTYPE), 0

    def step(self, theta: torch.Tensor, ascent: torch.Tensor) -> torch.Tensor:
        if self.kind == "sga":
            return theta + self.lr * ascent
        self.t += 1
        self.m = 0.9 * self.m + 0.1 * ascent
        self.v = 0.999 * self.v + 0.001 * ascent**2
        m_hat, v_hat = self.m / (1 - 0.9**self.t), self.v / (1 - 0.999**self.t)
        return theta + self.lr * m_hat / (v_hat.sqrt() + 1e-8)


def _rollout(old_table: torch.Tensor, mdp, cfg: dict, gen: torch.Generator):
    """Prompts ``[B, R]`` and response indices ``[B, R, G]`` drawn from ``π_old``.

    ``old_table [B, P, M, T]``. ``R = K·b`` prompts drawn uniformly, or every prompt once.
    """
    b_runs, num_p = old_table.shape[0], mdp.num_prompts
    if cfg["prompts_per_step"] is None:
        prompts = torch.arange(num_p).expand(b_runs, num_p)
    else:
        r = cfg["inner_steps"] * cfg["prompts_per_step"]
        prompts = torch.randint(num_p, (b_runs, r), generator=gen)
    probs = old_table.sum(dim=-1).exp()  # [B, P, M]
    probs = probs[torch.arange(b_runs)[:, None], prompts]  # [B, R, M]
    draws = torch.multinomial(probs.reshape(-1, probs.shape[-1]), cfg["group_size"],
                              replacement=True, generator=gen)  # fmt: skip
    return prompts, draws.view(*prompts.shape, cfg["group_size"])


def _gather(table: torch.Tensor, prompts: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``[B·R·G, T]`` of a per-run table ``[B, P, M, T]`` at prompts ``[B, R]``, ``idx [B, R, G]``."""
    runs = torch.arange(idx.shape[0])[:, None, None].expand_as(idx)
    return table[runs, prompts[..., None].expand_as(idx), idx].reshape(idx.numel(), -1)


def _ascent(theta, rows_at, old_rows, mask, adv, cfg: dict, method: str, num_seqs: int):
    """``scale · (−∇_θ loss)`` of every run on its own rows: the shape of ``θ``; and metrics."""
    leaf = theta.detach().clone().requires_grad_(True)
    rows = rows_at(leaf)
    opts = {"max_len": rows.shape[1], **cfg["core_options"]}  # the horizon is the budget T
    agg = opts.get("aggregation") or METHODS[method].aggregation
    norm = {"num_tokens": 1} if agg == "token_mean" else {}
    out = policy_loss(rows, old_rows, adv, mask, method=method, eps_low=cfg["eps_low"],
                      eps_high=cfg["eps_high"], num_seqs=num_seqs, **norm, **opts)  # fmt: skip
    (grad,) = torch.autograd.grad(out.loss, leaf)
    if agg == "token_mean":
        per_run = mask.view(theta.shape[0], -1).sum(dim=1).clamp(min=1).to(DTYPE)
        grad = grad / per_run.view(-1, *([1] * (theta.dim() - 1)))
    return -cfg["scale"] * grad, out.metrics


def _iteration(theta, mdp, cfg: dict, gen, opt, record=False, inner_sq=None):
    """One rollout and ``K`` inner steps: ``(θ, clip fraction, capped fraction, M_n [B], path)``."""
    b_runs, g, k_steps = theta.shape[0], cfg["group_size"], cfg["inner_steps"]
    theta_old = theta.detach().clone()
    old_table = token_logp(theta_old, mdp)  # [B, P, M, T]
    prompts, idx = _rollout(old_table, mdp, cfg, gen)  # [B, R], [B, R, G]
    r = prompts.shape[1]
    rewards = mdp.rewards[prompts[..., None].expand_as(idx), idx].reshape(-1)  # [B·R·G]
    adv = group_advantages(rewards, g, mode=cfg["adv_mode"],
                           lengths=mdp.lengths[idx].reshape(-1)
                           if cfg["adv_mode"] == "length_corrected" else None)  # fmt: skip
    adv = adv.view(b_runs, r, g)
    old_rows = _gather(old_table, prompts, idx).view(b_runs, r, g, -1)
    mask = mdp.mask[idx]  # [B, R, G, T]
    m_n = torch.where(mask, (-old_rows).exp(), 0.0).flatten(1).max(dim=1).values  # [B]
    per_step = r // k_steps if cfg["prompts_per_step"] is not None else r
    clip_frac, capped, path = 0.0, 0.0, []
    method, is_no_is = cfg["core_method"], cfg["method"] == "no_is"
    for k in range(k_steps):
        part = slice(k * per_step, (k + 1) * per_step) if cfg["prompts_per_step"] else slice(None)
        p_k, i_k = prompts[:, part], idx[:, part]

        def rows_at(leaf, p_k=p_k, i_k=i_k):
            return sampled_token_logp(leaf, mdp, p_k, i_k).reshape(-1, mdp.horizon)

        args = (old_rows[:, part].reshape(-1, mdp.horizon), mask[:, part].reshape(-1, mdp.horizon),
                adv[:, part].reshape(-1), cfg, method, per_step * g)  # fmt: skip
        if inner_sq is not None:
            inner_sq.append((policy_gradient(theta, mdp) ** 2).flatten(1).sum(dim=1))
        if is_no_is:
            step, _ = _ascent(theta_old, rows_at, *args)
        else:
            step, metrics = _ascent(theta, rows_at, *args)
            clip_frac = metrics["clip_ratio/region"]
            capped = max(capped, metrics.get("ratio/capped_frac", 0.0))
        theta = opt.step(theta, step)
        if record:
            path.append(theta.detach().clone())
    return theta, clip_frac, capped, m_n, path


def _setup(mdp, config: TrainConfig):
    runs = [(s, lr) for s in config.seeds for lr in config.lrs]
    theta = torch.stack([init_theta(mdp, config.init_scale, seed=s) for s, _ in runs])
    lrs = torch.tensor([lr for _, lr in runs], dtype=DTYPE)
    opt = _Optimiser(config.optimizer, lrs, theta.shape)
    gen = torch.Generator().manual_seed(10_007 * config.seeds[0] + 17)
    return runs, theta, opt, gen


def train_steps(mdp, config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """One rollout at the initial θ and ``K`` inner steps: ``θ_old [B, ...]``, path ``[K+1, B, ...]``."""
    cfg = config.resolved(mdp.horizon)
    _, theta, opt, gen = _setup(mdp, config)
    _, _, _, _, path = _iteration(theta, mdp, cfg, gen, opt, record=True)
    return theta, torch.stack([theta, *path])


def train(mdp, config: TrainConfig) -> dict:
    """Run every (seed, η) of ``config``; histories are ``[N + 1][B]`` lists (``[N][B]`` for M, σ²).

    Keys: ``J``, ``grad_sq`` (exact ‖∇J(θ_{n,0})‖²), ``clip_frac``, ``capped_frac``, ``M``
    (``M_n``, v5 Eq. 12), ``sigma2`` (σ_n², Eq. 13), ``S`` ``[B]`` (``(1/N) Σ_n Σ_k ‖∇J(θ_{n,k})‖²``,
    only with ``log_inner``), ``samples``, ``runs``, ``config``, ``mdp``, ``seconds``.
    """
    from .loglinear import length_variance

    cfg = config.resolved(mdp.horizon)
    if cfg["prompts_per_step"] is not None and cfg["prompts_per_step"] < 1:
        raise ValueError(f"prompts_per_step must be >= 1 or None, got {cfg['prompts_per_step']}")
    start = time.perf_counter()
    runs, theta, opt, gen = _setup(mdp, config)
    hist = {"J": [], "grad_sq": [], "clip_frac": [], "capped_frac": [], "M": [], "sigma2": []}
    inner_sq: list[torch.Tensor] | None = [] if config.log_inner else None

    def log(clip_frac: float, capped: float) -> None:
        hist["J"].append(objective(theta, mdp).tolist())
        hist["grad_sq"].append((policy_gradient(theta, mdp) ** 2).flatten(1).sum(dim=1).tolist())
        hist["clip_frac"].append(clip_frac)
        hist["capped_frac"].append(capped)

    log(0.0, 0.0)
    for _ in range(config.iterations):
        hist["sigma2"].append(length_variance(theta, mdp).tolist())
        theta, clip_frac, capped, m_n, _ = _iteration(theta, mdp, cfg, gen, opt, inner_sq=inner_sq)
        hist["M"].append(m_n.tolist())
        log(clip_frac, capped)
    rollout_prompts = (
        mdp.num_prompts if config.prompts_per_step is None
        else config.inner_steps * config.prompts_per_step
    )  # fmt: skip
    out = {
        **hist,
        "samples": [n * rollout_prompts * config.group_size for n in range(config.iterations + 1)],
        "runs": [{"seed": s, "lr": lr} for s, lr in runs],
        "config": cfg,
        "mdp": mdp.describe(),
        "seconds": time.perf_counter() - start,
    }
    if inner_sq is not None:
        out["S"] = (torch.stack(inner_sq).sum(dim=0) / config.iterations).tolist()
    return out
