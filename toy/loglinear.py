"""Log-linear token MDPs with a stop token and rare tokens, small enough to enumerate (float64).

Closer to an LLM than a table: the logits of every state share one parameter matrix,

    logits(s) = φ(s)ᵀ θ + b(s),   θ [F, V],  φ(s) [F] fixed random features,  b(s) [V] fixed offsets,

where a state ``s`` is (prompt, position t, previous token or the start symbol). Token 0 is the stop
token: it ends the response and counts in its length ``L``; positions after it are masked. The
fixed offsets ``b`` make the two quantities of v5 Theorem 4.1 dials:

- ``stop="hazard"``: stopping is allowed from position 1 on with initial hazard ``≈ hazard/T`` per
  step, so lengths spread over ``1 … T`` (σ² grows with T, as in a real budget);
- ``stop="two_point"``: the stop token is allowed only at position ``T/2 − d − 1`` (initial
  probability ≈ 1/2) and forced at ``T/2 + d − 1``: lengths ``T/2 ± d``, mean ``T/2`` and
  ``σ² = d²`` at the start, the rest of the MDP unchanged as ``d`` moves;
- ``rare_offset = β``: token ``V − 1`` gets the fixed logit offset ``−β`` everywhere, so its
  probability is ``≈ e^{−β}/(V − 2)`` (against the ordinary tokens) and
  ``M_n = max 1/π_old(token)`` grows like ``e^β`` once it is sampled. The rare token is the
  target at a fraction ``rare_target`` of positions, so it carries reward.

Reward (terminal, in [0, 1], five levels so group compositions stay enumerable): the share of the
response's non-stop tokens that match the prompt's target sequence, floored to quarters. It does
not reward length, so σ² is set by the dials, not by what is learned.

Attributes follow ``toy.mdp.TabularMDP`` (``tokens [M, T]``, ``mask [M, T]``, ``states [P, M, T]``,
``rewards [P, M]``, ``shape = (F, V)``), so ``toy.exact`` and ``toy.train`` work on both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .mdp import DTYPE, state_index

STOPS = ("none", "hazard", "two_point")
STOP = 0
T_MAX = 16  # features and targets are drawn for this budget and sliced


@dataclass(frozen=True)
class LogLinearMDP:
    """An enumerated MDP with a log-linear policy (see the module docstring for the shapes)."""

    vocab: int
    horizon: int
    num_prompts: int
    num_features: int
    stop: str
    spread: int
    rare_offset: float
    features: torch.Tensor  # [S, F] float64
    offsets: torch.Tensor  # [S, V] float64 (−inf where a token is not allowed)
    tokens: torch.Tensor  # [M, T] long
    mask: torch.Tensor  # [M, T] bool
    states: torch.Tensor  # [P, M, T] long
    rewards: torch.Tensor  # [P, M] float64
    targets: torch.Tensor  # [P, T] long
    name: str = "loglinear"
    table: str = "loglinear"
    token_rewards = None
    reward_kind = "match_quarters"

    @property
    def num_responses(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def num_states(self) -> int:
        return int(self.features.shape[0])

    @property
    def lengths(self) -> torch.Tensor:
        """``[M]`` response lengths ``L`` (float64; the stop token counts)."""
        return self.mask.sum(dim=1).to(DTYPE)

    @property
    def shape(self) -> tuple[int, int]:
        """``(F, V)``, the shape of ``θ``."""
        return (self.num_features, self.vocab)

    def logp_table(self, theta: torch.Tensor) -> torch.Tensor:
        """``log π_θ(· | s)`` for every state: ``[..., S, V]`` for ``θ [..., F, V]``."""
        return torch.log_softmax(self.features @ theta + self.offsets, dim=-1)

    def token_logp(self, theta: torch.Tensor) -> torch.Tensor:
        """``log π_θ(a_t | s_{t−1})``: ``[..., P, M, T]`` for ``θ [..., F, V]``; 0 where masked."""
        flat = self.states * self.vocab + self.tokens[None]  # [P, M, T]
        lp = self.logp_table(theta).flatten(-2)[..., flat]
        return torch.where(self.mask, lp, torch.zeros((), dtype=lp.dtype))

    def token_probs_table(self, theta: torch.Tensor) -> torch.Tensor:
        """``π_θ(· | s)`` for every state: ``[..., S, V]``."""
        return self.logp_table(theta).exp()

    def policy_gradient(self, theta: torch.Tensor) -> torch.Tensor:
        """Exact ``∇J(θ)`` in closed form: the shape of ``θ`` (``[F, V]`` or ``[B, F, V]``).

        ``∇J = (1/P) Σ_{p,m} P_θ(m|p) r(p,m) Σ_t φ(s_t) ⊗ (e_{a_t} − π_θ(·|s_t))``: the weights
        ``P·r`` are scattered onto (state, token) pairs, then contracted with the features.
        """
        batched = theta.dim() == 3
        th = theta if batched else theta[None]
        table = self.logp_table(th)  # [B, S, V]
        flat = self.states * self.vocab + self.tokens[None]  # [P, M, T]
        lp = torch.where(self.mask, table.flatten(-2)[:, flat], 0.0)  # [B, P, M, T]
        weight = lp.sum(-1).exp() * self.rewards / self.num_prompts  # [B, P, M]
        w_tok = torch.where(self.mask, weight[..., None], 0.0)  # [B, P, M, T]
        counts = torch.zeros(th.shape[0], table[0].numel(), dtype=DTYPE)
        counts.index_add_(1, flat.reshape(-1), w_tok.reshape(th.shape[0], -1))
        counts = counts.view_as(table)  # [B, S, V]
        local = counts - counts.sum(-1, keepdim=True) * table.exp()
        grad = torch.einsum("sf,bsv->bfv", self.features, local)
        return grad if batched else grad[0]

    def describe(self) -> dict:
        return {
            "name": self.name,
            "vocab": self.vocab,
            "horizon": self.horizon,
            "num_prompts": self.num_prompts,
            "num_features": self.num_features,
            "stop": self.stop,
            "spread": self.spread,
            "rare_offset": self.rare_offset,
            "num_responses": self.num_responses,
            "num_params": self.num_features * self.vocab,
            "reward": self.reward_kind,
        }


def stop_rules(horizon: int, stop: str, spread: int) -> tuple[list[bool], list[bool]]:
    """Per position: may the stop token be emitted there, and must it be."""
    allowed, forced = [False] * horizon, [False] * horizon
    if stop == "hazard":
        allowed = [t >= 1 for t in range(horizon)]
    elif stop == "two_point":
        mid = horizon // 2
        if horizon % 2 or not 0 <= spread < mid:
            raise ValueError(f"two_point needs an even T and 0 <= spread < T/2; got T={horizon}, "
                             f"spread={spread}")  # fmt: skip
        allowed[mid - spread - 1] = allowed[mid + spread - 1] = True
        forced[mid + spread - 1] = True
    elif stop != "none":
        raise ValueError(f"unknown stop rule {stop!r}; expected one of {STOPS}")
    return allowed, forced


def enumerate_stop_responses(vocab: int, horizon: int, allowed, forced):
    """All responses under the stop rules: ``tokens [M, T]`` (padded with 0), ``mask [M, T]``."""
    rows: list[list[int]] = []
    lengths: list[int] = []

    def extend(prefix: list[int]) -> None:
        t = len(prefix)
        if t == horizon:
            rows.append(prefix), lengths.append(horizon)
            return
        if allowed[t]:
            rows.append(prefix + [STOP] * (horizon - t)), lengths.append(t + 1)
        if not forced[t]:
            for a in range(1, vocab):
                extend(prefix + [a])

    extend([])
    tokens = torch.tensor(rows, dtype=torch.long)
    mask = torch.arange(horizon)[None, :] < torch.tensor(lengths)[:, None]
    return tokens, mask


def _offsets(num_states, vocab, horizon, num_prompts, allowed, forced, stop, hazard, rare_offset):
    """Fixed logit offsets ``[S, V]`` in the ``last_token`` state order (prompt, t, previous)."""
    off = torch.zeros(num_prompts, horizon, vocab + 1, vocab, dtype=DTYPE)
    if vocab >= 3 and rare_offset:
        off[..., vocab - 1] = -rare_offset
    for t in range(horizon):
        if not allowed[t]:
            off[:, t, :, STOP] = -math.inf
        elif forced[t]:
            off[:, t, :, 1:] = -math.inf
        elif stop == "hazard":
            # initial stop probability ≈ h = hazard/T against V−1 tokens of logit ≈ 0
            h = min(hazard / horizon, 0.5)
            off[:, t, :, STOP] = math.log(h * (vocab - 1) / (1 - h))
        else:  # two_point, the early stop: probability ≈ 1/2
            off[:, t, :, STOP] = math.log(vocab - 1)
    return off.reshape(num_states, vocab)


def make_loglinear_mdp(
    vocab: int = 3,
    horizon: int = 6,
    num_prompts: int = 4,
    *,
    num_features: int = 8,
    stop: str = "hazard",
    hazard: float = 1.5,
    spread: int = 0,
    rare_offset: float = 0.0,
    rare_target: float = 0.3,
    levels: int = 4,
    seed: int = 0,
    name: str | None = None,
) -> LogLinearMDP:
    """A random log-linear MDP (see the module docstring)."""
    if vocab < 2 or horizon < 1 or num_prompts < 1 or num_features < 1:
        raise ValueError(f"need vocab >= 2, horizon, num_prompts, num_features >= 1; got "
                         f"{vocab, horizon, num_prompts, num_features}")  # fmt: skip
    if num_features < 2:
        raise ValueError(f"num_features must be >= 2 (one is the constant), got {num_features}")
    if (vocab - 1) ** horizon > 300_000:
        raise ValueError(f"(V−1)^T = {(vocab - 1) ** horizon} responses: too many to enumerate")
    gen = torch.Generator().manual_seed(seed)
    allowed, forced = stop_rules(horizon, stop, spread)
    tokens, mask = enumerate_stop_responses(vocab, horizon, allowed, forced)
    states, num_states = state_index(tokens, num_prompts, vocab, "last_token")
    # Features and targets are drawn for the longest budget and sliced, so MDPs that differ only
    # in T (or in the dials) share every state they have in common.
    if horizon > T_MAX:
        raise ValueError(f"horizon {horizon} exceeds T_MAX = {T_MAX}")
    base = torch.randn(num_prompts, T_MAX, vocab + 1, num_features - 1, generator=gen, dtype=DTYPE)
    base = base[:, :horizon].reshape(num_states, num_features - 1)
    feats = torch.cat([base / math.sqrt(max(num_features - 1, 1)),
                       torch.ones(num_states, 1, dtype=DTYPE)], dim=1)  # fmt: skip
    offsets = _offsets(num_states, vocab, horizon, num_prompts, allowed, forced, stop, hazard,
                       rare_offset)  # fmt: skip
    has_rare = vocab >= 3 and bool(rare_offset)
    high = vocab - 1 if has_rare else vocab  # targets among the ordinary non-stop tokens
    targets = torch.randint(1, max(high, 2), (num_prompts, T_MAX), generator=gen)[:, :horizon]
    if has_rare:
        rare = (torch.rand(num_prompts, T_MAX, generator=gen) < rare_target)[:, :horizon]
        targets = torch.where(rare, torch.full_like(targets, vocab - 1), targets)
    real = mask & (tokens != STOP)  # [M, T] non-stop response tokens
    hits = (tokens[None] == targets[:, None, :]) & real[None]  # [P, M, T]
    share = hits.sum(dim=2) / real.sum(dim=1).clamp(min=1)  # [P, M]
    rewards = torch.floor(share * levels + 1e-9).to(DTYPE) / levels
    return LogLinearMDP(
        vocab=vocab, horizon=horizon, num_prompts=num_prompts, num_features=num_features,
        stop=stop, spread=spread, rare_offset=float(rare_offset), features=feats, offsets=offsets,
        tokens=tokens, mask=mask, states=states, rewards=rewards, targets=targets,
        name=name or f"loglinear_V{vocab}_T{horizon}_{stop}{spread or ''}_rare{rare_offset:g}",
    )  # fmt: skip


def length_variance(theta: torch.Tensor, mdp) -> torch.Tensor:
    """v5 Eq. 13: ``σ² = E_c Var_θ(L | c)``: a scalar, or ``[B]`` for ``θ [B, F, V]``."""
    from .mdp import response_probs

    probs = response_probs(theta, mdp)  # [..., P, M]
    mean = (probs * mdp.lengths).sum(-1, keepdim=True)
    return (probs * (mdp.lengths - mean) ** 2).sum(-1).mean(-1)


def score_tokens(theta: torch.Tensor, mdp: LogLinearMDP) -> torch.Tensor:
    """Per-token scores ``∇_θ log π_θ(a_t|s_{t−1}) = φ(s) ⊗ (e_a − π_θ(·|s))``: ``[P, M, T, F·V]``.

    Analytic for the log-linear policy, ``θ [F, V]``; zero at masked positions.
    """
    probs = mdp.token_probs_table(theta)  # [S, V]
    onehot = torch.nn.functional.one_hot(mdp.tokens, mdp.vocab).to(DTYPE)  # [M, T, V]
    local = onehot[None] - probs[mdp.states]  # [P, M, T, V]
    score = mdp.features[mdp.states][..., :, None] * local[..., None, :]  # [P, M, T, F, V]
    score = torch.where(mdp.mask[None, :, :, None, None], score, 0.0)
    return score.flatten(-2)
