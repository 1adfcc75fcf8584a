"""Fast rollouts: a static KV cache (compiled decode step on GPU) and a batch size from free memory.

``llm.rollout.sampling.generate`` is the reference path (dynamic KV cache, eager).
``generate_fast`` runs the same sampling — plain ancestral sampling from ``softmax(logits / temperature)`` in the top-p
nucleus, the checkpoint's other generation defaults hidden — with transformers'
``cache_implementation="static"``: the cache is allocated once at its final length, so every
decode step has the same shapes and transformers compiles the decode forward with
``torch.compile`` on CUDA (``compile=False`` turns that off; on CPU it is off). Prompt widths are
padded up to a multiple of ``pad_to_multiple_of`` so that successive rollouts reuse the compiled
graphs instead of recompiling for every new prompt width.

Equality with the reference: the static cache changes the attention's padded length, not the
arithmetic of the real positions, so the logits agree to float rounding; greedy decoding gives the
same tokens, and sampling under one seed gives the same samples unless a rounding difference flips
a draw (tests/test_generation_fast.py holds both on the tiny model).
"""

from __future__ import annotations

import os

import torch

from llm.rollout.sampling import Generation, _encode, check_sampling_args, sample_completions

__all__ = ["generate_fast", "auto_batch_size", "bytes_per_sequence", "free_memory_bytes"]


def free_memory_bytes(device: torch.device) -> int:
    """Free memory on ``device``: ``cudaMemGetInfo`` on CUDA, ``MemAvailable`` on CPU."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def bytes_per_sequence(config, seq_len: int, dtype: torch.dtype) -> int:
    """Memory one sequence needs while sampling: its static KV cache plus one step's logits.

    ``2 (K and V) · layers · kv_heads · head_dim · seq_len · bytes(dtype)`` for the cache and
    ``3 · V · 4`` bytes for the last position's logits and the float32 softmax/top-p work on them.
    """
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    elem = torch.empty((), dtype=dtype).element_size()
    kv = 2 * config.num_hidden_layers * kv_heads * head_dim * seq_len * elem
    return int(kv + 3 * config.vocab_size * 4)


def auto_batch_size(
    model,
    *,
    prompt_len: int,
    max_new_tokens: int,
    fraction: float = 0.8,
    free_bytes: int | None = None,
    limit: int | None = None,
) -> int:
    """Largest sampling batch whose caches fit in ``fraction`` of the free memory (at least 1).

    ``free_bytes`` defaults to ``free_memory_bytes`` of the model's device; ``limit`` caps the
    answer (e.g. at the number of sequences to sample).
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    param = next(model.parameters())
    free = free_memory_bytes(param.device) if free_bytes is None else free_bytes
    per_seq = bytes_per_sequence(model.config, prompt_len + max_new_tokens, param.dtype)
    size = max(1, int(fraction * free) // per_seq)
    return min(size, limit) if limit else size


@torch.no_grad()
def generate_fast(
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
    compile: bool | None = None,
    static_cache: bool = True,
    greedy: bool = False,
    pad_to_multiple_of: int = 1,
) -> Generation:
    """``llm.rollout.sampling.generate`` with a static KV cache; same arguments and result.

    ``batch_size=None`` picks it from free memory (``auto_batch_size``); ``compile`` defaults to
    True on CUDA; ``greedy`` takes the argmax instead of sampling (for equality checks);
    ``static_cache=False`` gives the dynamic-cache path through the same code.
    """
    check_sampling_args(num_samples, max_new_tokens, 1.0 if greedy else temperature,
                        1.0 if greedy else top_p)  # fmt: skip
    multiple = max(1, pad_to_multiple_of)
    encoded = [_encode(tokenizer, p) for p in prompts]
    longest = max(len(ids) for ids in encoded)
    width = -(-longest // multiple) * multiple  # ceil to the multiple: one width for every batch
    if batch_size is None:
        batch_size = auto_batch_size(
            model, prompt_len=width, max_new_tokens=max_new_tokens, limit=len(prompts) * num_samples
        )
    device = next(model.parameters()).device
    compile = (device.type == "cuda") if compile is None else compile
    kw: dict = dict(max_new_tokens=max_new_tokens, disable_compile=not compile)
    if greedy:
        kw.update(do_sample=False)
    else:
        kw.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
    if static_cache:
        kw["cache_implementation"] = "static"
    return sample_completions(model, tokenizer, encoded, num_samples=num_samples, seed=seed,
                              batch_size=batch_size, generate_kwargs=kw, width=width)  # fmt: skip
