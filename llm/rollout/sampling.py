"""Rollouts: ``G`` sampled completions per prompt with transformers ``generate``.

Sampling is plain ancestral sampling from ``softmax(logits / temperature)`` restricted to the
top-p nucleus; nothing else from a checkpoint's ``generation_config.json`` (top-k, repetition
penalty, min-p...) is applied, because the trainer's log-probs assume exactly this distribution.
Old log-probs are NOT taken from here: the trainer recomputes them with its training forward pass
(``llm.update.logprobs.token_logprobs``) so that the ratio at ``θ = θ_old`` is exactly 1.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

__all__ = ["Generation", "generate", "sample_completions", "split_completion"]


@dataclass
class Generation:
    """``N = len(prompts) · num_samples`` sequences; the samples of one prompt are contiguous.

    ``completion_ids[i]`` ends with the EOS token when the model stopped (EOS is an action, so
    it is scored), and has ``max_new_tokens`` tokens and no EOS when ``truncated[i]``.
    ``texts[i]`` is the decoded completion with special tokens skipped.
    """

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    texts: list[str]
    truncated: list[bool]

    def __len__(self) -> int:
        return len(self.completion_ids)


def split_completion(row: list[int], eos_ids: set[int]) -> tuple[list[int], bool]:
    """Cut a generated row after its first EOS; return (completion, truncated).

    ``row`` is what ``generate`` appended to the prompt (padding after EOS included).
    """
    for t, tok in enumerate(row):
        if tok in eos_ids:
            return row[: t + 1], False
    return list(row), True


def _eos_ids(tokenizer, model) -> set[int]:
    ids: set[int] = set()
    for source in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif source is not None:
            ids.update(int(x) for x in source)
    if not ids:
        raise ValueError("the tokenizer defines no eos_token; generation would never stop")
    return ids


def _encode(tokenizer, prompt: str) -> list[int]:
    # A chat-templated prompt already carries its special tokens (a BOS included, if any).
    bos = tokenizer.bos_token
    add = not (bos and prompt.startswith(bos))
    ids = tokenizer(prompt, add_special_tokens=add)["input_ids"]
    if not ids:
        raise ValueError(f"prompt {prompt[:80]!r} encodes to zero tokens")
    return list(ids)


@contextlib.contextmanager
def _plain_generation_config(model):
    """Hide the checkpoint's generation defaults (top_k, repetition_penalty...) during sampling."""
    from transformers import GenerationConfig

    saved = model.generation_config
    model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        model.generation_config = saved


def _left_pad(rows: list[list[int]], pad_id: int, width: int, device) -> tuple[torch.Tensor, ...]:
    """Left-pad token rows to ``width``: (input_ids [B, width], attention_mask [B, width])."""
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        attn[i, width - len(r) :] = 1
    return ids.to(device), attn.to(device)


def sample_completions(
    model,
    tokenizer,
    encoded: list[list[int]],
    *,
    num_samples: int,
    seed: int | None,
    batch_size: int | None,
    generate_kwargs: dict,
    width: int | None = None,
) -> Generation:
    """The sampling loop shared by every rollout path (plain here, static cache in static_cache).

    Takes each prompt's token ids (``_encode``), repeats them ``num_samples`` times (samples of a
    prompt contiguous),
    left-pads each batch of ``batch_size`` rows (to ``width``, or to the batch's longest prompt),
    calls ``model.generate(**generate_kwargs)`` under a forked, reseeded RNG with the checkpoint's
    generation defaults hidden, and cuts each row after its first EOS.
    """
    eos = _eos_ids(tokenizer, model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos)
    rows = [ids for ids in encoded for _ in range(num_samples)]  # [N] samples contiguous
    step = max(1, batch_size or len(rows))
    device = next(model.parameters()).device
    devices = [device] if device.type == "cuda" else []
    kwargs = dict(generate_kwargs, eos_token_id=sorted(eos), pad_token_id=pad_id, use_cache=True)
    was_training = model.training
    model.eval()
    completions: list[list[int]] = []
    truncated: list[bool] = []
    try:
        with torch.random.fork_rng(devices=devices), _plain_generation_config(model):
            if seed is not None:
                torch.manual_seed(seed)
            for start in range(0, len(rows), step):
                batch = rows[start : start + step]
                w = width or max(len(r) for r in batch)
                ids, attn = _left_pad(batch, pad_id, w, device)
                out = model.generate(input_ids=ids, attention_mask=attn, **kwargs)  # [B, w + T_new]
                for row in out[:, w:].tolist():
                    comp, trunc = split_completion(row, eos)
                    completions.append(comp)
                    truncated.append(trunc)
    finally:
        model.train(was_training)
    texts = tokenizer.batch_decode(completions, skip_special_tokens=True)
    return Generation(prompt_ids=rows, completion_ids=completions, texts=texts, truncated=truncated)


def check_sampling_args(
    num_samples: int, max_new_tokens: int, temperature: float, top_p: float
) -> None:
    if num_samples < 1 or max_new_tokens < 1:
        raise ValueError(
            f"num_samples and max_new_tokens must be >= 1: {num_samples}, {max_new_tokens}"
        )
    if not temperature > 0 or not 0 < top_p <= 1:
        raise ValueError(f"need temperature > 0 and 0 < top_p <= 1, got {temperature}, {top_p}")


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[str],
    *,
    num_samples: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
    batch_size: int | None = None,
) -> Generation:
    """Sample ``num_samples`` completions of each prompt (batched, KV cache, left padding).

    ``seed`` makes the draw reproducible without touching the caller's RNG streams (the global
    CPU/CUDA generators are forked and reseeded inside). ``batch_size`` bounds how many sequences
    go through ``generate`` at once (default: all N).
    """
    check_sampling_args(num_samples, max_new_tokens, temperature, top_p)
    kwargs = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0,
                  max_new_tokens=max_new_tokens)  # fmt: skip
    encoded = [_encode(tokenizer, p) for p in prompts]
    return sample_completions(model, tokenizer, encoded, num_samples=num_samples, seed=seed,
                              batch_size=batch_size, generate_kwargs=kwargs)  # fmt: skip
