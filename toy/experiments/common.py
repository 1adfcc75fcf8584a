"""What every experiment shares: where to write, quick vs full sizes, progress, saving data."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..exact import expected_update
from ..mdp import TabularMDP, make_mdp, policy_gradient


@dataclass
class Context:
    """Output folder, size mode and seed of one reproduce run."""

    out: Path
    full: bool = False
    seed: int = 0
    started: float = field(default_factory=time.perf_counter)

    def size(self, quick, full):
        """The quick or the full value of a setting."""
        return full if self.full else quick

    def folder(self, name: str) -> Path:
        path = self.out / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def log(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.started:6.1f}s] {msg}", file=sys.stderr, flush=True)


def save_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data, indent=1))
    return path


def save_csv(path: Path, rows: list[dict]) -> Path:
    """Rows of equal keys as CSV (the flat view of the data a figure plots)."""
    keys = list(rows[0]) if rows else []
    lines = [",".join(keys)] + [",".join(str(r[k]) for k in keys) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def lab_mdp(seed: int, reward: str = "graded", **kw) -> TabularMDP:
    """The enumerated MDP of the bias experiments: V=3, T=3, two prompts, prefix table."""
    args = dict(vocab=3, horizon=3, num_prompts=2, table="prefix", reward=reward, seed=seed)
    args.update(kw)
    return make_mdp(**args)


def train_mdp(seed: int, reward: str = "binary") -> TabularMDP:
    """The MDP of the training experiments: V=4, T=3, four prompts, sparse binary reward."""
    return make_mdp(4, 3, 4, table="prefix", reward=reward, p_correct=0.15, seed=seed)


def onpolicy_scale(
    mdp: TabularMDP, theta: torch.Tensor, method: str, adv_mode: str = "none", group_size: int = 1,
    **options,
) -> float:  # fmt: skip
    """``κ`` with ``E[g(θ_old)] ≈ κ ∇J(θ_old)``: the projection coefficient (exact for G = 1,
    advantages = rewards, fixed lengths; for group advantages the residual is their own bias).

    The method's normaliser: 1/T for a per-sequence token mean of a token ratio and for
    TIC-GRPO (v5 Eq. 8), 1 for a trajectory ratio without the budget (GRPO+Traj_IS, TIC's
    earlier reading). Projected rather than assumed, so a wrong guess about
    a normaliser shows up as a residual in the on-policy test, not a silent rescaling here.
    """
    method = "pg" if method == "no_is" else method
    g = expected_update(
        theta, theta, mdp, method, adv_mode=adv_mode, group_size=group_size, **options
    )
    ref = policy_gradient(theta, mdp)
    return float((g * ref).sum() / (ref * ref).sum())


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """``‖a − b‖ / ‖b‖``."""
    return float((a - b).norm() / b.norm())
