"""A tiny Qwen2-architecture model and tokenizer, built locally (no downloads).

``build_tiny(out_dir)`` writes a randomly initialised ``Qwen2ForCausalLM`` (2 layers, hidden 64)
and a byte-level BPE tokenizer in Qwen2's own format (same pre-tokenizer split, ByteLevel
decoder, ``<|im_start|>``/``<|im_end|>`` chat template) to ``out_dir``; both load with
``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained`` (which rebuilds the
tokenizer as a ``Qwen2Tokenizer``, exactly as for a real Qwen checkpoint). The vocabulary is
small: the printable-ASCII bytes, the three special tokens and a few dozen merges learnt in
process from the task's text, so a random model spreads its first tokens over ~150 choices.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from llm.data.tasks import TASK_WORDS, write_tiny_task

__all__ = ["build_tiny", "write_tiny_task", "TINY_MODEL_CONFIG"]

PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

#: Qwen2's pre-tokenizer split (digits one by one, words with their leading space).
QWEN_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

#: Number of BPE merges learnt on top of the printable-ASCII alphabet.
NUM_MERGES = 12

#: Model size: small enough that an RL step on a 2-core CPU takes well under a second.
TINY_MODEL_CONFIG = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    tie_word_embeddings=True,
    initializer_range=0.02,
)


def _corpus() -> list[str]:
    """Text the tokenizer is learnt from: chat roles and the task. Its characters are the
    alphabet, so the vocabulary stays ~40 tokens and a random model emits a digit often."""
    words = "system user assistant " + " ".join(TASK_WORDS)
    digits = [
        f"{a} {word} {b} = {a + b}?\n" for a in range(10) for b in range(10) for word in TASK_WORDS
    ]
    return [words] * 20 + digits


def _build_tokenizer():
    """A byte-level BPE in exactly Qwen2's format (so ``AutoTokenizer`` rebuilds it unchanged
    as a ``Qwen2Tokenizer``), over the characters of ``_corpus()`` plus ``NUM_MERGES`` merges.
    Characters outside that alphabet (most of an English instruction) are dropped when encoding."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core = Tokenizer(
        models.BPE(
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    core.normalizer = normalizers.NFC()
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False), byte_level]
    )
    core.decoder = decoders.ByteLevel()
    corpus = _corpus()
    alphabet = {c for line in corpus for c in byte_level.pre_tokenize_str(line)[0][0]}
    specials = [PAD, IM_START, IM_END]
    trainer = trainers.BpeTrainer(
        vocab_size=len(specials) + len(alphabet) + NUM_MERGES,
        special_tokens=specials,
        show_progress=False,
    )
    core.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token=PAD,
        pad_token=PAD,
        eos_token=IM_END,
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
        model_max_length=TINY_MODEL_CONFIG["max_position_embeddings"],
    )


def build_tiny(out_dir: str | os.PathLike, *, seed: int = 0) -> Path:
    """Write the tiny model (random weights from ``seed``) and tokenizer to ``out_dir``.

    Idempotent for a given seed: the same seed writes the same weights. Returns ``out_dir``.
    """
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **TINY_MODEL_CONFIG,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
