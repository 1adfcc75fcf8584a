"""One rollout as training data: collect (generate → score → shape → filter).

``collect`` samples G completions for each of P prompts, scores them with the reward, applies
DAPO's soft overlong shaping and, when asked, DAPO's dynamic sampling (groups whose rewards are
all equal carry no signal under group-relative advantages: drop them and refill from fresh
prompts). Turning rows into model inputs and the no-grad log-prob pass are the update's
business (``llm.update.batching``).

Shapes: ``N`` sequences, ``T`` the longest completion of the rollout; a subset's tensors use its
own longest prompt and completion, so their widths vary (the loss normalisers are explicit).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from llm.config.checks import GENERATIONS  # "plain": rollout.generate, "static": generate_fast
from llm.parallel.comm import Comm, as_comm
from llm.rollout.sampling import Generation, _encode, generate
from llm.rollout.static_cache import auto_batch_size, generate_fast


@dataclass
class Experience:
    """The rollout a policy update trains on; rows ``g·G … g·G+G-1`` share prompt ``g``."""

    prompts: list[str]  # [P] rendered prompts
    answers: list[str]  # [N]
    gen: Generation  # N sequences
    rewards: torch.Tensor  # [N] after overlong shaping
    raw_rewards: torch.Tensor  # [N] the reward function's values
    group_size: int
    advantages: torch.Tensor | None = None  # [N]
    old_logp: torch.Tensor | None = None  # [N, T]
    ref_logp: torch.Tensor | None = None  # [N, T]
    weights: torch.Tensor | None = None  # [N] 0 drops a row from the loss (mask_truncated)
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def loss_weights(self) -> torch.Tensor:
        """[N] 1.0 for rows in the loss, 0.0 for rows left out."""
        return self.weights if self.weights is not None else torch.ones(len(self))

    def __len__(self) -> int:
        return len(self.gen)

    @property
    def lengths(self) -> torch.Tensor:
        """[N] completion lengths (tokens, EOS included)."""
        return torch.tensor([len(c) for c in self.gen.completion_ids], dtype=torch.long)


def overlong_penalty(
    lengths: torch.Tensor, max_len: int, buffer: int, scale: float
) -> torch.Tensor:
    """DAPO soft overlong punishment ``[N]`` (≤ 0), added to the reward.

    ``0`` for ``L ≤ max_len − buffer``; ``scale·(max_len − buffer − L)/buffer`` inside the buffer
    (reaching ``−scale`` at ``L = max_len``); ``−scale`` beyond. ``buffer = 0`` disables it.
    """
    if buffer <= 0:
        return torch.zeros(lengths.shape, dtype=torch.float32)
    excess = (lengths.float() - (max_len - buffer)).clamp(min=0.0)
    return -scale * (excess / buffer).clamp(max=1.0)


def _score(gen: Generation, answers: list[str], reward: Callable) -> torch.Tensor:
    values = reward(list(gen.texts), answers)
    return torch.tensor([float(v) for v in values], dtype=torch.float32)


def sampling_batch_size(
    model,
    tokenizer,
    prompts: list[str],
    *,
    num_samples: int,
    max_new_tokens: int,
    given: int | None,
) -> int:
    """Sequences per ``generate`` call: ``given`` when set; else all ``len(prompts)·num_samples``
    on CPU, and on CUDA the largest batch whose KV cache fits in free memory
    (``llm.rollout.static_cache.auto_batch_size`` at the longest prompt, capped at all)."""
    n = len(prompts) * num_samples
    if given:
        return given
    param = next(model.parameters(), None) if hasattr(model, "parameters") else None
    if param is None or param.device.type != "cuda":
        return n
    width = max(len(_encode(tokenizer, p)) for p in prompts)
    return auto_batch_size(model, prompt_len=width, max_new_tokens=max_new_tokens, limit=n)


def _take(gen: Generation, rows: Sequence[int]) -> Generation:
    return Generation(
        prompt_ids=[gen.prompt_ids[i] for i in rows],
        completion_ids=[gen.completion_ids[i] for i in rows],
        texts=[gen.texts[i] for i in rows],
        truncated=[gen.truncated[i] for i in rows],
    )


def _concat(parts: list[Generation]) -> Generation:
    return Generation(
        prompt_ids=[x for g in parts for x in g.prompt_ids],
        completion_ids=[x for g in parts for x in g.completion_ids],
        texts=[x for g in parts for x in g.texts],
        truncated=[x for g in parts for x in g.truncated],
    )


def _round(
    model,
    tokenizer,
    pairs,
    reward,
    *,
    group_size,
    max_new_tokens,
    temperature,
    top_p,
    seed,
    batch_size,
    overlong_buffer,
    overlong_scale,
    stats: dict | None,
    comm: Comm,
    generation: str = "plain",
) -> list[tuple[tuple, bool]]:
    """One generation round: ``[(group item, rewards all equal)]`` per prompt of ``pairs``.

    ``stats`` (first round only) receives the reward statistics, over all ranks under ``comm``.
    """
    prompts = [p for p, _ in pairs]
    answers = [a for _, a in pairs for _ in range(group_size)]
    if generation not in GENERATIONS:
        raise ValueError(f"generation={generation!r} is not one of {list(GENERATIONS)}")
    batch_size = sampling_batch_size(model, tokenizer, prompts, num_samples=group_size,
                                     max_new_tokens=max_new_tokens, given=batch_size)  # fmt: skip
    sampler = generate_fast if generation == "static" else generate
    gen = sampler(
        model, tokenizer, prompts, num_samples=group_size, max_new_tokens=max_new_tokens,
        temperature=temperature, top_p=top_p, seed=seed, batch_size=batch_size,
    )  # fmt: skip
    raw = _score(gen, answers, reward)  # [n]
    lengths = torch.tensor([len(c) for c in gen.completion_ids])
    shaped = raw + overlong_penalty(lengths, max_new_tokens, overlong_buffer, overlong_scale)
    groups = shaped.view(-1, group_size)  # [p, G]
    flat = (groups == groups[:, :1]).all(dim=1)  # [p] all rewards equal
    if stats is not None:
        columns = [raw, shaped, flat, lengths, torch.tensor(gen.truncated)]
        # the statistics of the global rollout, identical on every rank
        columns = [torch.tensor(comm.gather(c.tolist()), dtype=c.dtype) for c in columns]
        stats.update(_reward_stats(*columns))
    out = []
    for g in range(len(prompts)):
        rows = list(range(g * group_size, (g + 1) * group_size))
        item = (
            _take(gen, rows),
            raw[rows],
            shaped[rows],
            [prompts[g]],
            answers[g * group_size : (g + 1) * group_size],
        )
        out.append((item, bool(flat[g])))
    return out


def collect(
    model,
    tokenizer,
    next_prompts: Callable[[int], list[tuple[str, str]]],
    reward: Callable,
    *,
    num_prompts: int,
    group_size: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    seed: int,
    batch_size: int | None,
    overlong_buffer: int = 0,
    overlong_scale: float = 1.0,
    dynamic_sampling: bool = False,
    max_rounds: int = 0,
    comm: Comm | None = None,
    generation: str = "plain",
) -> Experience:
    """Generate, score and (optionally) filter one rollout of ``num_prompts`` groups.

    ``next_prompts(k)`` returns the next ``k`` (rendered prompt, answer) pairs of the data
    stream. ``stats`` records the FIRST round's reward statistics (the policy's performance on
    fresh prompts, unaffected by filtering) and the filtering counts.

    ``comm`` (``llm.parallel.comm.Comm``; None: a world of one): ``num_prompts`` is this rank's
    share and ``next_prompts`` its slice of the global stream. Every rank fills its own groups;
    a refill round runs while ANY rank is short (the decision is summed over ranks, so all ranks
    take the same number of stream draws); a rank already full skips generating its slice of
    that round. The statistics are computed on the union of all ranks' first rounds.

    ``generation`` picks the sampler ("plain": ``llm.rollout.sampling.generate``, "static":
    ``llm.rollout.static_cache.generate_fast``); ``batch_size`` None or 0 resolves through
    ``sampling_batch_size``.
    """
    comm = as_comm(comm)
    kept: list[tuple[Generation, torch.Tensor, torch.Tensor, list[str], list[str]]] = []
    spare: list = []  # zero-signal groups, used only if refilling runs out of rounds
    stats: dict[str, float] = {}
    need = own = num_prompts  # own: this rank's shortfall; need: summed over ranks
    rounds = 0
    while need > 0:
        pairs = next_prompts(need if rounds == 0 else num_prompts)
        if own > 0:  # (only with W > 1 can a rank be full while another is short)
            groups = _round(model, tokenizer, pairs, reward, group_size=group_size,
                            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                            seed=seed * 1000 + rounds, batch_size=batch_size,
                            overlong_buffer=overlong_buffer, overlong_scale=overlong_scale,
                            stats=stats if rounds == 0 else None, comm=comm,
                            generation=generation)  # fmt: skip
            for item, is_flat in groups:
                (spare if dynamic_sampling and is_flat else kept).append(item)
        rounds += 1
        own = num_prompts - len(kept)
        need = int(comm.sum([max(own, 0)])[0])
        if not dynamic_sampling or rounds > max_rounds:
            break
    used_spare = 0
    if len(kept) < num_prompts:  # out of rounds: fill with zero-signal groups to keep shapes
        fill = spare[: num_prompts - len(kept)]
        used_spare, kept = len(fill), kept + fill
    kept = kept[:num_prompts]
    if dynamic_sampling:
        stats["dynamic_sampling/rounds"] = float(rounds)
        used_spare = int(comm.sum([used_spare])[0])
        stats["dynamic_sampling/zero_signal_groups"] = float(used_spare)
    return Experience(
        prompts=[p for k in kept for p in k[3]],
        answers=[a for k in kept for a in k[4]],
        gen=_concat([k[0] for k in kept]),
        rewards=torch.cat([k[2] for k in kept]),
        raw_rewards=torch.cat([k[1] for k in kept]),
        group_size=group_size,
        stats=stats,
    )


def _reward_stats(raw, shaped, flat, lengths, truncated) -> dict[str, float]:
    """First-round statistics from ``[n]`` rewards, shaped rewards, lengths, truncation flags and
    ``[p]`` all-equal flags."""
    lengths = lengths.float()
    out = {
        "reward/mean": float(raw.mean()),
        "reward/std": float(raw.std(unbiased=False)),
        "frac_reward_zero_std": float(flat.float().mean()),
        "completions/mean_length": float(lengths.mean()),
        "completions/min_length": float(lengths.min()),
        "completions/max_length": float(lengths.max()),
        "completions/clipped_ratio": float(truncated.sum()) / len(truncated),
    }
    if not torch.equal(raw, shaped):
        out["reward/shaped_mean"] = float(shaped.mean())
    return out
