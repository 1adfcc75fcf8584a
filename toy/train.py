"""The toy training loop: the LLM trainer's skeleton on a tabular MDP, vectorised over runs.

    for n in iterations:
        θ_old ← θ                                  (refresh)
        collect G responses per prompt from π_old  (rollout)
        A ← group_advantages(rewards, G, mode)     (advantages)
        for k in K: θ ← θ + η · step(−∇ policy_loss(θ; θ_old, A))   (inner updates)
        log exact J(θ), ‖∇J(θ)‖²                   (log)

``B`` independent runs (seeds × learning rates) share one ``policy_loss`` call per inner step:
the runs' rows are stacked ``[B·P·G, T]`` with unit normalisers, and each run's gradient is then
divided by its own batch normaliser, so every run gets exactly the update it would get alone.

``method="no_is"`` is the paper's no-importance-sampling ablation: the ``pg`` gradient at ``θ_old``
is computed once per rollout and reused for all ``K`` inner steps (with SGA that is one step of
size ``K·η``; with Adam the moments still move).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch

from ticgrpo import METHODS, group_advantages, policy_loss

from .mdp import DTYPE, TabularMDP, init_theta, objective, policy_gradient, token_logp

LOOP_METHODS = (*METHODS, "no_is")


@dataclass
class TrainConfig:
    """One toy training configuration (every field is saved beside the results)."""

    method: str = "grpo"
    """a ``policy_loss`` method or ``no_is`` (pg gradient at θ_old reused for all K steps)"""
    adv_mode: str | None = None
    """advantage mode; ``None`` reads the method's row (``std`` for no_is)"""
    group_size: int = 8
    """G, responses per prompt per rollout"""
    iterations: int = 50
    """number of rollouts (π_old refreshes)"""
    inner_steps: int = 4
    """K, inner updates per rollout, each on the whole rollout"""
    lrs: tuple[float, ...] = (0.5,)
    """step sizes η; every η is run for every seed"""
    lr_scale: float = 1.0
    """multiplies every η (e.g. 1/κ to match the methods' on-policy step sizes)"""
    optimizer: str = "sga"
    """``sga`` (plain stochastic gradient ascent) or ``adam``"""
    seeds: tuple[int, ...] = (0, 1, 2)
    """seeds for the initial θ and the rollouts"""
    init_scale: float = 0.5
    """initial logits ~ N(0, init_scale²)"""
    eps_low: float | None = None
    """clip width; ``None`` reads the method's row"""
    eps_high: float | None = None
    """clip width; ``None`` reads the method's row"""
    loss_options: dict = field(default_factory=dict)
    """extra ``policy_loss`` options (``clip``, ``ratio``, ``tic_clip``, ``aggregation`` …)"""
    beta: float = 0.0
    """KL penalty to the initial policy (``kl_estimator`` k3)"""

    def resolved(self) -> dict:
        """The configuration with the method row's defaults filled in (JSON-ready)."""
        row = METHODS["pg" if self.method == "no_is" else self.method]
        out = asdict(self)
        out["adv_mode"] = self.adv_mode or ("std" if self.method == "no_is" else row.advantage_mode)
        out["eps_low"] = row.eps_low if self.eps_low is None else self.eps_low
        out["eps_high"] = row.eps_high if self.eps_high is None else self.eps_high
        out["lrs"], out["seeds"] = list(self.lrs), list(self.seeds)
        return out


class _Optimiser:
    """Per-entry SGA or Adam ascent on ``θ [B, S, V]`` with per-run step sizes ``η [B]``."""

    def __init__(self, kind: str, lrs: torch.Tensor, shape: torch.Size):
        if kind not in ("sga", "adam"):
            raise ValueError(f"unknown optimizer {kind!r}; expected 'sga' or 'adam'")
        self.kind, self.lr = kind, lrs.view(-1, 1, 1)
        self.m, self.v, self.t = torch.zeros(shape, dtype=DTYPE), torch.zeros(shape, dtype=DTYPE), 0

    def step(self, theta: torch.Tensor, ascent: torch.Tensor) -> torch.Tensor:
        if self.kind == "sga":
            return theta + self.lr * ascent
        self.t += 1
        self.m = 0.9 * self.m + 0.1 * ascent
        self.v = 0.999 * self.v + 0.001 * ascent**2
        m_hat, v_hat = self.m / (1 - 0.9**self.t), self.v / (1 - 0.999**self.t)
        return theta + self.lr * m_hat / (v_hat.sqrt() + 1e-8)


def _rollout(theta_old: torch.Tensor, mdp: TabularMDP, g: int, gen: torch.Generator):
    """Indices ``[B, P, G]`` of responses drawn from ``π_old`` for every run and prompt."""
    b, num_p = theta_old.shape[0], mdp.num_prompts
    probs = token_logp(theta_old, mdp).sum(dim=-1).exp().reshape(b * num_p, -1)  # [B·P, M]
    draws = torch.multinomial(probs, g, replacement=True, generator=gen)
    return draws.view(b, num_p, g)


def _gather(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``[B·P·G, T]`` of a per-run table ``[B, P, M, T]`` at indices ``[B, P, G]``."""
    b, num_p, g = idx.shape
    runs = torch.arange(b)[:, None, None].expand_as(idx)
    prompts = torch.arange(num_p)[None, :, None].expand_as(idx)
    return table[runs, prompts, idx].reshape(b * num_p * g, -1)


def _ascent(theta, old_rows, idx, adv, mdp, cfg: dict, method: str, ref_rows=None):
    """``−∇_θ loss`` of every run on its own rollout: ``[B, S, V]`` (see the module docstring)."""
    leaf = theta.detach().clone().requires_grad_(True)
    rows = _gather(token_logp(leaf, mdp).expand(theta.shape[0], *mdp.states.shape), idx)
    mask = mdp.mask[idx].reshape(rows.shape)
    extra = {"max_len": mdp.horizon, **cfg["loss_options"]}  # the horizon is the budget T
    if cfg["beta"] > 0:
        extra.update(beta=cfg["beta"], ref_logp=ref_rows, kl_estimator="k3")
    out = policy_loss(
        rows, old_rows, adv, mask, method=method, eps_low=cfg["eps_low"],
        eps_high=cfg["eps_high"], num_seqs=1, num_tokens=1, **extra,
    )  # fmt: skip
    (grad,) = torch.autograd.grad(out.loss, leaf)
    b, num_p, g = idx.shape
    agg = extra.get("aggregation") or METHODS[method].aggregation
    if agg == "token_mean":
        scale = mask.view(b, -1).sum(dim=1).clamp(min=1).to(DTYPE)
    else:
        scale = torch.full((b,), float(num_p * g), dtype=DTYPE)
    return -grad / scale.view(-1, 1, 1), out.metrics


def _setup(mdp: TabularMDP, config: TrainConfig):
    """Runs (seed, η), initial ``θ [B, S, V]``, the KL reference table, optimiser, generator."""
    runs = [(s, lr) for s in config.seeds for lr in config.lrs]
    theta = torch.stack([init_theta(mdp, config.init_scale, seed=s) for s, _ in runs])
    ref_table = token_logp(theta, mdp).detach()  # [B, P, M, T] initial policy = KL reference
    lrs = torch.tensor([lr * config.lr_scale for _, lr in runs], dtype=DTYPE)
    opt = _Optimiser(config.optimizer, lrs, theta.shape)
    gen = torch.Generator().manual_seed(10_007 * config.seeds[0] + 17)
    return runs, theta, ref_table, opt, gen


def _iteration(theta, mdp, config: TrainConfig, cfg: dict, gen, opt, ref_table, record=False):
    """One rollout from ``π_old = π_θ`` and ``K`` inner steps: ``(θ, clip fraction, path)``.

    ``path`` is the list of ``θ`` after each inner step (``record=True``), else empty.
    """
    g = config.group_size
    theta_old = theta.detach().clone()
    old_table = token_logp(theta_old, mdp)  # [B, P, M, T]
    idx = _rollout(theta_old, mdp, g, gen)  # [B, P, G]
    rewards = mdp.rewards[torch.arange(mdp.num_prompts)[None, :, None], idx].reshape(-1)
    lengths = mdp.lengths[idx].reshape(-1)
    adv = group_advantages(
        rewards, g, mode=cfg["adv_mode"],
        lengths=lengths if cfg["adv_mode"] == "length_corrected" else None,
    )  # fmt: skip
    old_rows, ref_rows = _gather(old_table, idx), _gather(ref_table, idx)
    clip_frac, path = 0.0, []
    if config.method == "no_is":
        frozen, _ = _ascent(theta_old, old_rows, idx, adv, mdp, cfg, "pg", ref_rows)
    for _ in range(config.inner_steps):
        if config.method == "no_is":
            step = frozen
        else:
            step, metrics = _ascent(theta, old_rows, idx, adv, mdp, cfg, config.method, ref_rows)
            clip_frac = metrics["clip_ratio/region"]
        theta = opt.step(theta, step)
        if record:
            path.append(theta.detach().clone())
    return theta, clip_frac, path


def train_steps(mdp: TabularMDP, config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """One rollout at the initial θ and ``K`` inner steps: ``θ_old [B, S, V]``, path ``[K+1, B, S, V]``.

    The path of real inner loops along which the staleness experiment measures the exact bias.
    """
    config.resolved()  # validates the method's row
    _, theta, ref_table, opt, gen = _setup(mdp, config)
    _, _, path = _iteration(theta, mdp, config, config.resolved(), gen, opt, ref_table, record=True)
    return theta, torch.stack([theta, *path])


def train(mdp: TabularMDP, config: TrainConfig) -> dict:
    """Run every (seed, η) of ``config``; returns histories ``[iterations + 1, B]`` and metadata.

    Keys: ``J``, ``grad_sq`` (exact ``‖∇J(θ_n)‖²``), ``clip_frac``, ``kl`` (to the initial policy),
    ``samples`` ``[iterations + 1]`` (responses drawn so far per run), ``runs`` (seed, η per column),
    ``config``, ``seconds``.
    """
    if config.method not in LOOP_METHODS:
        raise ValueError(f"unknown method {config.method!r}; expected one of {LOOP_METHODS}")
    cfg = config.resolved()
    start = time.perf_counter()
    runs, theta, ref_table, opt, gen = _setup(mdp, config)
    hist = {"J": [], "grad_sq": [], "clip_frac": [], "kl": []}

    def log(clip_frac: float) -> None:
        hist["J"].append(objective(theta, mdp).tolist())
        hist["grad_sq"].append((policy_gradient(theta, mdp) ** 2).sum(dim=(1, 2)).tolist())
        hist["clip_frac"].append(clip_frac)
        probs = token_logp(theta, mdp).sum(-1).exp()  # [B, P, M]
        kl = (probs * (token_logp(theta, mdp) - ref_table).sum(-1)).sum(-1).mean(-1)
        hist["kl"].append(kl.tolist())

    log(0.0)
    for _ in range(config.iterations):
        theta, clip_frac, _ = _iteration(theta, mdp, config, cfg, gen, opt, ref_table)
        log(clip_frac)
    samples = [n * mdp.num_prompts * config.group_size for n in range(config.iterations + 1)]
    return {
        **{k: v for k, v in hist.items()},
        "samples": samples,
        "runs": [{"seed": s, "lr": lr} for s, lr in runs],
        "config": cfg,
        "mdp": mdp.describe(),
        "seconds": time.perf_counter() - start,
    }
