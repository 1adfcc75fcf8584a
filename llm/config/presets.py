"""Named starting points for ``ticgrpo train --preset NAME`` (overridable with --config/--set).

- ``tiny`` (the default): a tiny Qwen2-architecture model and tokenizer built locally, the
  synthetic ``copy`` task, CPU-sized batches (16 prompts × 8 samples, 4 new tokens, AdamW
  5e-4, 600 steps, one thread). Mean reward rises from ~0.05 to above 0.8 by step ~300 and to
  ~1.0 by step 400, for grpo and tic_grpo, in about a minute on a CPU (docs/TRAINER.md has the
  measured curves; lr 1e-3 learns faster but sometimes locks prompts onto wrong answers).

- ``paper`` (= ``qwen3-1.7b``): SPEC section 5, i.e. v5's appendix C.1, on one GPU.
  What v5 fixes, taken as given:
    * model Qwen3-1.7B (a local folder; nothing is downloaded);
    * data: all of DAPO-Math-17K plus AIME 1983-2022, **one epoch** (every prompt once):
      ``total_steps=0`` derives the step count from the data, ``len(train) // 128`` (a last
      partial batch is dropped, as verl's training loader does). ``ticgrpo data paper``
      (``llm.data.paper_data``) writes the training file: DAPO-Math-17K with its duplicate
      rows removed (the published parquet repeats each of its ~17.4k prompts about 100 times,
      so one epoch of the raw file would be 100 epochs) plus the AIME years 1983-2022 in DAPO's
      prompt format, so that one reward (``answer_tag``: DAPO's "Answer: X" check) scores all;
    * "total batch size 128, mini-batch 32, each trajectory reused for four gradient updates":
      in verl these count prompts, so 128 prompts per rollout, 4 mini-batches of 32 prompts
      (``minibatch_size = 32·G`` sequences), one pass (``epochs_per_rollout=1``): K = 4;
    * no dynamic sampling, no soft overlong punishment, no KL (beta=0);
    * advantages: ``std``, ``(r - mean_G r) / (std_G r + 1e-6)`` with the sample standard
      deviation (``std_kind=sample``), which is what verl computes for GRPO (torch.std) and
      v5 ran its experiments in verl "following DAPO". v5's own formula is ``mean``
      (``--set advantage_mode=mean``);
    * trainer evaluation: AIME24 Avg@32 at temperature 1.0, top-p 1.0 (v5 Fig. 2's curve);
      the full Table 1 suite is ``ticgrpo eval --suite paper`` (llm/eval/suite.py).
  What v5 leaves open, and our choice:
    * group size G = 16: DAPO's value (v5 follows DAPO; verl's DAPO recipe samples 16);
      a rollout is then 128·16 = 2048 trajectories, a mini-batch 512.
    * optimizer AdamW, lr 1e-6, weight decay 0.1, 10 warmup steps, gradient clipping 1.0:
      verl's actor optimizer is AdamW and these are its DAPO recipe's values. AdamW also makes
      the arms comparable at one learning rate: it is invariant to a constant factor in the loss,
      so TIC-GRPO's ``1/T`` and GRPO's ``1/L_i`` normalisers do not change the step size the way
      they would under plain SGD (the earlier reading's SGD is the ``paper-early`` preset).
    * response budget T = 8192 new tokens, prompts up to 2048 tokens (DAPO's prompt budget):
      Qwen3 reasons at length in its default thinking mode, and DAPO's 20,480 does not fit
      one epoch (~145 rollouts of 2048 trajectories) into v5's 24 H200-hours for the 1.7B
      model; 8192 is also TIC-GRPO's ``T`` in ``1/T``.
    * ε: each method's own widths from ``ticgrpo.METHODS`` (GRPO, TIC-GRPO, GRPO₂, GRPO+Traj_IS:
      0.2 / 0.2; GSPO: its paper's 3e-4 / 4e-4, since its length-normalised ratio spreads about
      a thousand times less than a token ratio). DAPO's clip-higher is ``--set eps_high=0.28``.
    * aggregation: each method's row (GRPO: per-sequence token mean, v5 Eq. 4-5). verl's DAPO
      recipe aggregates GRPO by the batch token mean: ``--set aggregation=token_mean``.
    * bf16 weights, gradient checkpointing, length-sorted micro-batches of at most 40,960
      padded tokens (the area of 4 full-length rows: the memory bound of micro-batches of 4
      sequences without padding short rows to a long one; the gradient does not depend on the
      split, tests/test_llm_padding.py).
  Paths are local placeholders: ``--set model=... --set train_data=... --set eval_data=...``.

- ``paper-8b`` (= ``qwen3-8b``): the same for Qwen3-8B on two H200 nodes (``torchrun``, 16
  ranks, ``distributed=true``). v5 keeps the global batch with gradient accumulation; here each
  mini-batch of 512 sequences is 32 per rank, cut into token-budget micro-batches of at most
  20,480 padded tokens, with the mini-batch's global normalisers, so the update equals the
  1.7B preset's batch exactly (tests/test_llm_distributed_train.py).

- ``paper-early`` (= ``qwen2.5-math-1.5b``): the earlier versions' setting, kept as a named
  option: Qwen2.5-Math-1.5B, 128 trajectories = 16 prompts × 8, mini-batch 32 trajectories,
  "4 reuses" read as 4 passes (K = 16), plain SGD at lr 1e-3, 1024 + 3072 tokens, 500 steps.
  ``qwen2.5-1.5b``: the same with AdamW at 1e-6 on Qwen2.5-1.5B.
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

#: v5 appendix C.1's batch: prompts per rollout, prompts per mini-batch, passes over a rollout.
PAPER_PROMPTS_PER_ROLLOUT = 128
PAPER_PROMPTS_PER_MINIBATCH = 32
PAPER_GROUP_SIZE = 16
PAPER_MAX_PROMPT_TOKENS = 2048
PAPER_MAX_NEW_TOKENS = 8192

PAPER = {
    "model": "models/Qwen3-1.7B",
    "train_data": "data/paper_train.jsonl",
    "data_schema": "dapo",
    "eval_data": "data/aime24.jsonl",
    "reward": "answer_tag",
    "prompts_per_step": PAPER_PROMPTS_PER_ROLLOUT,
    "group_size": PAPER_GROUP_SIZE,
    "max_prompt_tokens": PAPER_MAX_PROMPT_TOKENS,
    "max_new_tokens": PAPER_MAX_NEW_TOKENS,
    "temperature": 1.0,
    "top_p": 1.0,
    "method": "grpo",
    "advantage_mode": "std",
    "std_kind": "sample",
    "beta": 0.0,
    "dynamic_sampling": False,
    "overlong_buffer": 0,
    "minibatch_size": PAPER_PROMPTS_PER_MINIBATCH * PAPER_GROUP_SIZE,
    "microbatch_size": 0,
    "microbatch_tokens": 4 * (PAPER_MAX_PROMPT_TOKENS + PAPER_MAX_NEW_TOKENS),
    "epochs_per_rollout": 1,
    "optimizer": "adamw",
    "lr": 1e-6,
    "weight_decay": 0.1,
    "warmup_steps": 10,
    "max_grad_norm": 1.0,
    "dtype": "auto",
    "gradient_checkpointing": True,
    "total_steps": 0,
    "eval_every": 10,
    "eval_k": 32,
    "eval_temperature": 1.0,
    "save_every": 10,
    "samples_every": 10,
}

PAPER_8B = {
    **PAPER,
    "model": "models/Qwen3-8B",
    "distributed": True,
    "microbatch_tokens": 2 * (PAPER_MAX_PROMPT_TOKENS + PAPER_MAX_NEW_TOKENS),
}

PAPER_EARLY = {
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
    "qwen3-1.7b": PAPER,
    "paper-8b": PAPER_8B,
    "qwen3-8b": PAPER_8B,
    "paper-early": PAPER_EARLY,
    "qwen2.5-math-1.5b": PAPER_EARLY,
    "qwen2.5-1.5b": {
        **PAPER_EARLY, "model": "models/Qwen2.5-1.5B", "optimizer": "adamw", "lr": 1e-6
    },
}  # fmt: skip


def get_preset(name: str) -> dict:
    """A copy of preset ``name``'s overrides; ValueError with close matches otherwise."""
    if name not in PRESETS:
        close = difflib.get_close_matches(name, list(PRESETS), n=2, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown preset {name!r}{hint}; available: {sorted(PRESETS)}")
    return dict(PRESETS[name])
