"""One rollout as training data: collect (generate → score → shape → filter), collate, score.

``collect`` samples G completions for each of P prompts, scores them with the reward, applies
DAPO's soft overlong shaping and, when asked, DAPO's dynamic sampling (groups whose rewards are
all equal carry no signal under group-relative advantages: drop them and refill from fresh
prompts). ``collate`` turns any subset of rows into model inputs; ``sequence_logprobs`` runs the
training forward pass without gradients (old / reference log-probs, entropy).

Shapes: ``N`` sequences, ``T`` the longest completion of the rollout; a subset's tensors use its
own longest prompt and completion, so their widths vary (the loss normalisers are explicit).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from llm.config_checks import GENERATIONS  # "plain": rollout.generate, "static": generate_fast
from llm.generation_fast import auto_batch_size, generate_fast
from llm.logprobs import token_logprobs
from llm.rollout import Generation, _encode, generate


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


@dataclass
class Batch:
    """Model inputs for a subset of rows: prompts left-padded, completions right-padded."""

    input_ids: torch.Tensor  # [m, S]
    attention_mask: torch.Tensor  # [m, S]
    mask: torch.Tensor  # [m, T] bool, True on completion tokens
    rows: torch.Tensor  # [m] indices into the rollout


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
    (``llm.generation_fast.auto_batch_size`` at the longest prompt, capped at all)."""
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
    comm,
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
        if comm is not None:  # the statistics of the global rollout, identical on every rank
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
    comm=None,
    generation: str = "plain",
) -> Experience:
    """Generate, score and (optionally) filter one rollout of ``num_prompts`` groups.

    ``next_prompts(k)`` returns the next ``k`` (rendered prompt, answer) pairs of the data
    stream. ``stats`` records the FIRST round's reward statistics (the policy's performance on
    fresh prompts, unaffected by filtering) and the filtering counts.

    Data parallel (``comm``, ``llm.dist_train.Comm``): ``num_prompts`` is this rank's share and
    ``next_prompts`` its slice of the global stream. Every rank fills its own groups; a refill
    round runs while ANY rank is short (the decision is summed over ranks, so all ranks take the
    same number of stream draws); a rank already full skips generating its slice of that round.
    The statistics are computed on the union of all ranks' first rounds.

    ``generation`` picks the sampler ("plain": ``llm.rollout.generate``, "static":
    ``llm.generation_fast.generate_fast``); ``batch_size`` None or 0 resolves through
    ``sampling_batch_size``.
    """
    kept: list[tuple[Generation, torch.Tensor, torch.Tensor, list[str], list[str]]] = []
    spare: list = []  # zero-signal groups, used only if refilling runs out of rounds
    stats: dict[str, float] = {}
    need = own = num_prompts  # own: this rank's shortfall; need: summed over ranks
    rounds = 0
    while need > 0:
        pairs = next_prompts(need if rounds == 0 else num_prompts)
        if own > 0:  # (only under comm can a rank be full while another is short)
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
        need = own if comm is None else int(comm.sum([max(own, 0)])[0])
        if not dynamic_sampling or rounds > max_rounds:
            break
    used_spare = 0
    if len(kept) < num_prompts:  # out of rounds: fill with zero-signal groups to keep shapes
        fill = spare[: num_prompts - len(kept)]
        used_spare, kept = len(fill), kept + fill
    kept = kept[:num_prompts]
    if dynamic_sampling:
        stats["dynamic_sampling/rounds"] = float(rounds)
        if comm is not None:
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
    if count <= 0:
        return parts
    if count < len(parts) or count > len(rows):
        raise ValueError(
            f"cannot cut {len(rows)} rows into exactly {count} micro-batches: the budget "
            f"(max_rows={max_rows}, max_tokens={max_tokens}) already needs {len(parts)}"
        )
    while len(parts) < count:
        areas = [_padded_area(exp, q) if len(q) > 1 else -1 for q in parts]
        i = max(range(len(parts)), key=areas.__getitem__)
        half = (len(parts[i]) + 1) // 2
        parts[i : i + 1] = [parts[i][:half], parts[i][half:]]
    return parts


def lockstep_microbatches(
    exp: Experience, rows: torch.Tensor, *, max_rows: int, max_tokens: int = 0, comm=None
) -> list[torch.Tensor]:
    """``microbatches``; under data parallel (``comm``) with a token budget, cut into the
    largest count any rank needs, so that all ranks run the same number of forward passes."""
    parts = microbatches(exp, rows, max_rows=max_rows, max_tokens=max_tokens)
    if comm is None or max_tokens <= 0:
        return parts  # row-count splits of equal per-rank shares already agree across ranks
    count = max(int(c) for c in comm.gather([len(parts)]))
    return microbatches(exp, rows, max_rows=max_rows, max_tokens=max_tokens, count=count)


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
    comm=None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs ``[N, T]`` of every completion token under ``model`` (float32, 0 on padding),
    and per-token entropies ``[N, T]`` when asked; computed ``microbatch`` rows at a time, or
    (``microbatch_tokens > 0``) in length-sorted micro-batches of at most that many padded
    tokens (``microbatches``); either way each row lands at its own index. ``comm`` (data
    parallel): every rank runs the same number of micro-batches (``lockstep_microbatches``)."""
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
