"""Tabular token MDPs small enough to enumerate every response, in float64.

A prompt ``p`` is followed by a response ``a_1 … a_T`` over a vocabulary of ``V`` tokens. The policy
is a softmax table ``θ [S, V]``: one row of logits per *state*, where a state is either the whole
prefix (``table="prefix"``, ``S = P·Σ_{t<T} V^t``) or the pair (position, last token)
(``table="last_token"``, ``S = P·T·(V+1)``, the extra symbol standing for "no token yet").

With ``eos=True`` token 0 ends the response: the positions after it are masked (they carry log-prob
0) and the tokens there are padded with 0, so a response of length ``L < T`` is one enumerated row.

Every enumerable quantity is a tensor over the ``M`` distinct responses, shared by all prompts:

- ``tokens [M, T]`` (long), ``mask [M, T]`` (bool), ``lengths [M]``,
- ``states [P, M, T]`` (long; 0 where masked, never read there),
- ``rewards [P, M]`` float64 terminal returns (a dense MDP stores ``token_rewards [P, M, T]`` and
  its return is their sum).

Batched parameters ``θ [B, S, V]`` (B independent runs or seeds) work everywhere ``θ [S, V]`` does.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

DTYPE = torch.float64
TABLES = ("prefix", "last_token")
REWARD_KINDS = ("binary", "graded", "dense")


@dataclass(frozen=True)
class TabularMDP:
    """An enumerated token MDP (see the module docstring for the shapes)."""

    vocab: int
    horizon: int
    num_prompts: int
    table: str
    eos: bool
    num_states: int
    tokens: torch.Tensor  # [M, T] long
    mask: torch.Tensor  # [M, T] bool
    states: torch.Tensor  # [P, M, T] long
    rewards: torch.Tensor  # [P, M] float64
    token_rewards: torch.Tensor | None  # [P, M, T] float64 (dense MDPs), else None
    reward_kind: str
    name: str = "mdp"

    @property
    def num_responses(self) -> int:
        """``M``, the number of distinct responses per prompt."""
        return int(self.tokens.shape[0])

    @property
    def lengths(self) -> torch.Tensor:
        """``[M]`` response lengths ``L`` (float64)."""
        return self.mask.sum(dim=1).to(DTYPE)

    @property
    def shape(self) -> tuple[int, int]:
        """``(S, V)``, the shape of one parameter table."""
        return (self.num_states, self.vocab)

    def describe(self) -> dict:
        """JSON-ready description (for run configs)."""
        return {
            "name": self.name,
            "vocab": self.vocab,
            "horizon": self.horizon,
            "num_prompts": self.num_prompts,
            "table": self.table,
            "eos": self.eos,
            "reward": self.reward_kind,
            "num_states": self.num_states,
            "num_responses": self.num_responses,
            "num_params": self.num_states * self.vocab,
        }


def enumerate_responses(vocab: int, horizon: int, eos: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """All distinct responses: ``tokens [M, T]`` and ``mask [M, T]``.

    Without EOS, ``M = V^T``. With EOS (token 0), a row keeps tokens up to and including the first
    0 and pads the rest with 0 (masked), so each distinct response appears exactly once.
    """
    rows, masks = [], []
    for seq in itertools.product(range(vocab), repeat=horizon):
        if eos and 0 in seq:
            stop = seq.index(0)
            if any(a != 0 for a in seq[stop:]):
                continue  # a non-canonical copy of the response that ended at `stop`
            masks.append([t <= stop for t in range(horizon)])
        else:
            masks.append([True] * horizon)
        rows.append(list(seq))
    return torch.tensor(rows, dtype=torch.long), torch.tensor(masks, dtype=torch.bool)


def state_index(
    tokens: torch.Tensor, num_prompts: int, vocab: int, table: str
) -> tuple[torch.Tensor, int]:
    """State ids ``[P, M, T]`` of every (prompt, response, position), and ``S``.

    ``prefix``: the state before position ``t`` is (prompt, a_1 … a_{t-1}), numbered within blocks
    of size ``V^t`` per position. ``last_token``: (prompt, t, a_{t-1} or the start symbol ``V``).
    """
    m, horizon = tokens.shape
    prompts = torch.arange(num_prompts)[:, None, None]  # [P, 1, 1]
    if table == "prefix":
        sizes = [vocab**t for t in range(horizon)]
        offsets = torch.tensor([0] + list(itertools.accumulate(sizes))[:-1])  # per position
        per_prompt = sum(sizes)
        codes = torch.zeros(m, horizon, dtype=torch.long)
        for t in range(1, horizon):
            codes[:, t] = codes[:, t - 1] * vocab + tokens[:, t - 1]
        states = prompts * per_prompt + (offsets[None, :] + codes)[None]
        return states, num_prompts * per_prompt
    if table == "last_token":
        prev = torch.cat([torch.full((m, 1), vocab), tokens[:, :-1]], dim=1)  # [M, T]
        pos = torch.arange(horizon)[None, :]
        states = (prompts * horizon + pos[None]) * (vocab + 1) + prev[None]
        return states, num_prompts * horizon * (vocab + 1)
    raise ValueError(f"unknown table {table!r}; expected one of {TABLES}")


def make_mdp(
    vocab: int = 3,
    horizon: int = 3,
    num_prompts: int = 2,
    *,
    table: str = "prefix",
    reward: str = "binary",
    eos: bool = False,
    p_correct: float = 0.25,
    seed: int = 0,
    name: str | None = None,
) -> TabularMDP:
    """A random tabular MDP.

    Rewards: ``binary`` — each response is correct (1) with probability ``p_correct``, and every
    prompt has at least one correct response; ``graded`` — values in {0, 0.25, 0.5, 0.75, 1};
    ``dense`` — each (state, token) pays a reward in {0, 1/(2T), 1/T} so the return is in [0, 1]
    and takes few distinct values.
    """
    if reward not in REWARD_KINDS:
        raise ValueError(f"unknown reward kind {reward!r}; expected one of {REWARD_KINDS}")
    if vocab < 2 or horizon < 1 or num_prompts < 1:
        raise ValueError(f"need vocab >= 2, horizon >= 1, num_prompts >= 1; got {vocab, horizon}")
    if vocab**horizon > 200_000:
        raise ValueError(f"V^T = {vocab**horizon} responses is too many to enumerate")
    gen = torch.Generator().manual_seed(seed)
    tokens, mask = enumerate_responses(vocab, horizon, eos)
    states, num_states = state_index(tokens, num_prompts, vocab, table)
    m = tokens.shape[0]
    token_rewards = None
    if reward == "binary":
        rewards = (torch.rand(num_prompts, m, generator=gen) < p_correct).to(DTYPE)
        best = torch.randint(m, (num_prompts,), generator=gen)
        rewards[torch.arange(num_prompts), best] = 1.0
    elif reward == "graded":
        rewards = torch.randint(0, 5, (num_prompts, m), generator=gen).to(DTYPE) / 4
    else:
        table_r = torch.randint(0, 3, (num_states, vocab), generator=gen).to(DTYPE) / (2 * horizon)
        token_rewards = torch.where(mask[None], table_r[states, tokens[None]], 0.0)
        rewards = token_rewards.sum(dim=2)
    return TabularMDP(
        vocab=vocab,
        horizon=horizon,
        num_prompts=num_prompts,
        table=table,
        eos=eos,
        num_states=num_states,
        tokens=tokens,
        mask=mask,
        states=states,
        rewards=rewards,
        token_rewards=token_rewards,
        reward_kind=reward,
        name=name
        or f"{table}_V{vocab}_T{horizon}_P{num_prompts}_{reward}" + ("_eos" if eos else ""),
    )


def init_theta(mdp: TabularMDP, scale: float = 0.5, seed: int = 0, batch: int | None = None):
    """Random logits ``N(0, scale²)``: ``[S, V]``, or ``[B, S, V]`` when ``batch`` is given."""
    gen = torch.Generator().manual_seed(seed)
    shape = mdp.shape if batch is None else (batch, *mdp.shape)
    return scale * torch.randn(*shape, generator=gen, dtype=DTYPE)


def logp_table(theta: torch.Tensor, mdp) -> torch.Tensor:
    """``log π_θ(· | s)`` for every state: ``[..., S, V]`` (tabular: ``log_softmax(θ)``)."""
    if isinstance(mdp, TabularMDP):
        return torch.log_softmax(theta, dim=-1)
    return mdp.logp_table(theta)


def token_logp(theta: torch.Tensor, mdp: TabularMDP) -> torch.Tensor:
    """``log π_θ(a_t | s_{t-1})`` for every prompt, response and position: ``[..., P, M, T]``.

    ``θ`` is ``[S, V]`` or ``[B, S, V]`` (log-linear MDPs: ``[..., F, V]``); masked positions hold
    exactly 0.
    """
    table = logp_table(theta, mdp)  # [..., S, V]
    flat = mdp.states * mdp.vocab + mdp.tokens[None]  # [P, M, T] index into S·V
    lp = table.flatten(-2)[..., flat]  # [..., P, M, T]
    return torch.where(mdp.mask, lp, torch.zeros((), dtype=lp.dtype))


def sampled_token_logp(
    theta: torch.Tensor, mdp, prompts: torch.Tensor, idx: torch.Tensor
) -> torch.Tensor:
    """``log π_θ`` of sampled rows only: ``[B, R, G, T]`` for ``θ [B, ...]``, prompts ``[B, R]``,
    response indices ``[B, R, G]`` (cheaper than ``token_logp`` when ``G·R ≪ P·M``)."""
    table = logp_table(theta, mdp).flatten(-2)  # [B, S·V]
    st = mdp.states[prompts[..., None].expand_as(idx), idx]  # [B, R, G, T]
    flat = st * mdp.vocab + mdp.tokens[idx]
    lp = table.gather(1, flat.reshape(flat.shape[0], -1)).view(flat.shape)
    return torch.where(mdp.mask[idx], lp, torch.zeros((), dtype=lp.dtype))


def response_probs(theta: torch.Tensor, mdp: TabularMDP) -> torch.Tensor:
    """``P_θ(response | prompt)``: ``[..., P, M]``; each prompt's row sums to 1."""
    return token_logp(theta, mdp).sum(dim=-1).exp()


def objective(theta: torch.Tensor, mdp: TabularMDP) -> torch.Tensor:
    """``J(θ) = (1/P) Σ_p Σ_m P_θ(m|p) r(p, m)``: a scalar, or ``[B]`` for batched ``θ``."""
    return (response_probs(theta, mdp) * mdp.rewards).sum(dim=-1).mean(dim=-1)


def policy_gradient(theta: torch.Tensor, mdp: TabularMDP) -> torch.Tensor:
    """Exact ``∇J(θ)`` by autograd through the enumeration: the shape of ``θ``.

    For batched ``θ [B, S, V]`` each run's gradient is its own slice (the runs do not interact).
    Log-linear MDPs use their analytic ``policy_gradient`` (the tests hold the two equal).
    """
    if not isinstance(mdp, TabularMDP):
        return mdp.policy_gradient(theta)
    return policy_gradient_autograd(theta, mdp)


def policy_gradient_autograd(theta: torch.Tensor, mdp) -> torch.Tensor:
    """``∇J(θ)`` by autograd through ``objective`` (any MDP class): the naive twin."""
    leaf = theta.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(objective(leaf, mdp).sum(), leaf)
    return grad


def score_jacobian(theta: torch.Tensor, mdp: TabularMDP) -> torch.Tensor:
    """Analytic ``∂ log π_θ(a_t|s_{t-1}) / ∂θ`` for the tabular softmax: ``[P, M, T, S·V]``.

    ``∂ log softmax(θ_s)_a / ∂θ_{s'} = 1[s = s'] (e_a − π_θ(·|s))``; zero at masked positions.
    Dense in ``S·V``, so only for small MDPs (the Monte Carlo code's per-response Jacobian).
    """
    probs = torch.softmax(theta, dim=-1)  # [S, V]
    s, v = mdp.shape
    onehot = torch.nn.functional.one_hot(mdp.tokens, v).to(DTYPE)  # [M, T, V]
    local = onehot[None] - probs[mdp.states]  # [P, M, T, V]
    local = torch.where(mdp.mask[None, :, :, None], local, 0.0)
    jac = torch.zeros(*mdp.states.shape, s, v, dtype=DTYPE)
    jac.scatter_(
        -2, mdp.states[..., None, None].expand(*mdp.states.shape, 1, v), local[..., None, :]
    )
    return jac.flatten(-2)
