"""Static-cache rollouts (llm/rollout/static_cache.py) against the plain reference llm.rollout.sampling."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from llm.data.tiny import build_tiny  # noqa: E402
from llm.rollout.sampling import generate  # noqa: E402
from llm.rollout.static_cache import auto_batch_size, bytes_per_sequence, generate_fast  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = build_tiny(tmp_path_factory.mktemp("tiny"), seed=0)
    model = transformers.AutoModelForCausalLM.from_pretrained(path)
    # larger weights than the init so that greedy decoding does not repeat one token forever
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    tok = transformers.AutoTokenizer.from_pretrained(path)
    prompts = [
        tok.apply_chat_template([{"role": "user", "content": c}], tokenize=False, add_generation_prompt=True)
        for c in ("1 plus 2", "3 plus 4 plus 1 plus", "9")
    ]  # fmt: skip
    return model, tok, prompts


def test_sampling_under_a_seed_matches_the_plain_path(tiny) -> None:
    model, tok, prompts = tiny
    kw = dict(num_samples=3, max_new_tokens=10, temperature=0.9, top_p=0.95, seed=7)
    ref = generate(model, tok, prompts, **kw)
    fast = generate_fast(model, tok, prompts, batch_size=len(prompts) * 3, **kw)
    assert fast.completion_ids == ref.completion_ids
    assert fast.prompt_ids == ref.prompt_ids and fast.texts == ref.texts
    assert fast.truncated == ref.truncated
    # a different seed gives different samples: the comparison above is not vacuous
    other = generate_fast(model, tok, prompts, **dict(kw, seed=8))
    assert other.completion_ids != ref.completion_ids


def test_greedy_static_equals_dynamic_and_ignores_batching_and_padding(tiny) -> None:
    model, tok, prompts = tiny
    kw = dict(num_samples=1, max_new_tokens=12, greedy=True)
    dynamic = generate_fast(model, tok, prompts, static_cache=False, batch_size=3, **kw)
    assert len({tuple(c) for c in dynamic.completion_ids}) > 1  # not one repeated token
    assert any(len(set(c)) > 2 for c in dynamic.completion_ids)
    for extra in (dict(batch_size=3), dict(batch_size=1), dict(pad_to_multiple_of=16)):
        static = generate_fast(model, tok, prompts, **kw, **extra)
        assert static.completion_ids == dynamic.completion_ids, extra


def test_bytes_per_sequence_hand_computed() -> None:
    cfg = transformers.Qwen2Config(
        vocab_size=1000, hidden_size=64, num_hidden_layers=3, num_attention_heads=8,
        num_key_value_heads=2,
    )  # fmt: skip
    # 2 (K,V) * 3 layers * 2 kv heads * 8 head dim * 100 tokens * 2 bytes + 3 * 1000 * 4
    assert bytes_per_sequence(cfg, 100, torch.bfloat16) == 2 * 3 * 2 * 8 * 100 * 2 + 12_000


def test_auto_batch_size_from_free_memory(tiny) -> None:
    model, _, _ = tiny
    per_seq = bytes_per_sequence(model.config, 30 + 20, torch.float32)
    size = auto_batch_size(model, prompt_len=30, max_new_tokens=20, free_bytes=100 * per_seq)
    assert size == 80  # fraction 0.8 of 100 sequences' worth
    assert auto_batch_size(model, prompt_len=30, max_new_tokens=20, free_bytes=10) == 1
    capped = auto_batch_size(model, prompt_len=30, max_new_tokens=20, free_bytes=10**12, limit=7)
    assert capped == 7
    assert auto_batch_size(model, prompt_len=8, max_new_tokens=8) >= 1  # real free memory
    with pytest.raises(ValueError, match="fraction"):
        auto_batch_size(model, prompt_len=8, max_new_tokens=8, fraction=0.0)
