"""Named starting points for ``ticgrpo train --preset NAME`` (overridable with --config/--set).

- ``tiny`` (the default): a tiny Qwen2-architecture model and tokenizer built locally, the
  synthetic ``copy`` task, CPU-sized batches (16 prompts × 8 samples, 4 new tokens, AdamW
  5e-4, 600 steps, one thread). Mean reward rises from ~0.05 to above 0.8 by step ~300 and to
  ~1.0 by step 400, for grpo and tic_grpo, in about a minute on a CPU (docs/TRAINER.md has the
  measured curves; lr 1e-3 learns faster but sometimes locks prompts onto wrong answers).
- ``paper``: SPEC section 5, the TIC-GRPO paper's setting on one GPU. The paper fixes the model
  (Qwen2.5-Math-1.5B), the data (DAPO-Math-17K + AIME 1983-2022), the rollout batch (128
  trajectories), the mini-batch (32), "each trajectory reused 4 times" and plain stochastic
  gradient ascent. It leaves open, and we choose:
    * "4 reuses": read literally as 4 passes over the rollout (epochs_per_rollout=4), i.e.
      K = 4 · 128/32 = 16 inner steps per rollout, each trajectory seen in 4 of them. The other
      reading (4 mini-batch updates, each trajectory used once) is epochs_per_rollout=1.
    * group size G=8 (so 16 prompts per rollout), the usual GRPO choice for maths.
    * lengths: 1024 prompt tokens, 3072 new tokens (Qwen2.5-Math's 4096-token context).
    * learning rate 1e-3 for plain SGD. SGD has no per-parameter normalisation, so its useful
      rate is far above AdamW's 1e-6; 1e-3 with gradient clipping at 1.0 bounds each update's
      norm by 1e-3. Treat it as the first value of a sweep, not a result.
    * temperature 1.0, top_p 1.0 (on-policy sampling), no KL (beta=0), bf16 weights, gradient
      checkpointing.
    * micro-batches: length-sorted, at most 16,384 padded tokens each (microbatch_tokens; the
      area of 4 full-length rows, so the same activation-memory bound as micro-batches of 4
      sequences, while shorter rows share a forward pass instead of each being padded to the
      longest of 4). Exact: the gradient is the same (tests/test_llm_padding.py); on CPU it
      removed padding worth 1.17x per RL step (docs/PERFORMANCE.md). ``--set
      microbatch_tokens=0 --set microbatch_size=4`` gives fixed micro-batches of 4.
  The model and data paths are local placeholders: point them at your copies with --set.
- ``qwen2.5-1.5b``, ``qwen2.5-math-1.5b``, ``qwen3-1.7b``: the paper preset with another model
  path (Qwen3 with a longer budget: its context allows it); ``qwen2.5-1.5b`` uses AdamW at 1e-6,
  the common practitioner setting, for comparison runs.
"""

from __future__ import annotations

import difflib

TINY = {
    "model": "tiny",
    "train_data": "tiny",
    "tiny_task": "copy",
    "instruction": "none",
    "reward": "tiny_task",
    "prompts_per_step": 16,
    "group_size": 8,
    "max_new_tokens": 4,
    "minibatch_size": 64,
    "epochs_per_rollout": 1,
    "optimizer": "adamw",
    "lr": 5e-4,
    "max_grad_norm": 1.0,
    "total_steps": 600,
    "samples_every": 50,
    "eval_data": "tiny",
    "eval_every": 100,
    "eval_k": 4,
    "eval_limit": 64,
    "save_every": 100,
    "num_threads": 1,
    "device": "cpu",
}

PAPER = {
    "model": "models/Qwen2.5-Math-1.5B",
    "train_data": "data/dapo_math_17k_plus_aime_1983_2022.parquet",
    "eval_data": "data/aime_2024.parquet",
    "reward": "math",
    "prompts_per_step": 16,
    "group_size": 8,
    "max_prompt_tokens": 1024,
    "max_new_tokens": 3072,
    "temperature": 1.0,
    "top_p": 1.0,
    "minibatch_size": 32,
    "microbatch_size": 0,
    "microbatch_tokens": 16384,
    "epochs_per_rollout": 4,
    "optimizer": "sgd",
    "lr": 1e-3,
    "max_grad_norm": 1.0,
    "beta": 0.0,
    "dtype": "auto",
    "gradient_checkpointing": True,
    "total_steps": 500,
    "eval_every": 50,
    "eval_k": 16,
    "save_every": 25,
    "samples_every": 10,
}

PRESETS: dict[str, dict] = {
    "tiny": TINY,
    "paper": PAPER,
    "qwen2.5-math-1.5b": PAPER,
    "qwen2.5-1.5b": {**PAPER, "model": "models/Qwen2.5-1.5B", "optimizer": "adamw", "lr": 1e-6},
    "qwen3-1.7b": {**PAPER, "model": "models/Qwen3-1.7B", "max_new_tokens": 4096},
}


def get_preset(name: str) -> dict:
    """A copy of preset ``name``'s overrides; ValueError with close matches otherwise."""
    if name not in PRESETS:
        close = difflib.get_close_matches(name, list(PRESETS), n=2, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown preset {name!r}{hint}; available: {sorted(PRESETS)}")
    return dict(PRESETS[name])
