"""Every rule a ``TrainConfig`` must satisfy, as one list of messages that say what to change.

Run by ``llm.config.train_config.validate`` on the resolved config, before any model or data is
loaded.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from pathlib import Path

from llm.data.tasks import TASKS  # importing it also registers the tiny_task reward
from llm.rewards.registry import available_rewards

DTYPES = ("auto", "float32", "bfloat16", "float16")
OPTIMIZERS = ("sgd", "adamw")
ON_BAD_ROWS = ("raise", "skip")
SCHEMAS = ("auto", "dapo", "plain", "fields")
GENERATIONS = ("plain", "static")


def _choice(problems, name, value, allowed, suggest) -> None:
    if value not in allowed:
        problems.append(
            f"{name}={value!r} is not one of {list(allowed)}{suggest(str(value), allowed)}"
        )


def _positive(problems, cfg, names, *, allow_zero: bool = False) -> None:
    for name in names:
        value = getattr(cfg, name)
        if value < 0 or (value == 0 and not allow_zero):
            bound = ">= 0" if allow_zero else "> 0"
            problems.append(f"{name}={value} must be {bound}")


def _check_method(cfg, problems: list[str], suggest) -> None:
    from ticgrpo import ADVANTAGE_MODES, AGGREGATIONS, KL_ESTIMATORS, METHODS, TIC_CLIP_READINGS
    from ticgrpo.advantages import STD_KINDS

    if cfg.method not in METHODS:
        problems.append(
            f"method={cfg.method!r} is unknown{suggest(cfg.method, METHODS)}; choose one of "
            f"{sorted(METHODS)} (the no-IS ablation is the loop option no_is=true)"
        )
        return
    _choice(problems, "advantage_mode", cfg.advantage_mode, ADVANTAGE_MODES, suggest)
    _choice(problems, "aggregation", cfg.aggregation, AGGREGATIONS, suggest)
    _choice(problems, "kl_estimator", cfg.kl_estimator, KL_ESTIMATORS, suggest)
    _choice(problems, "tic_clip", cfg.tic_clip, TIC_CLIP_READINGS, suggest)
    _choice(problems, "std_kind", cfg.std_kind, STD_KINDS, suggest)
    if not 0 <= cfg.eps_low < 1:
        problems.append(
            f"eps_low={cfg.eps_low} must be in [0, 1) (the ratio's lower bound 1-eps_low > 0)"
        )
    if cfg.eps_high < 0:
        problems.append(f"eps_high={cfg.eps_high} must be >= 0")
    if cfg.group_size < 2 and cfg.advantage_mode in ("std", "mean", "rloo", "length_corrected"):
        problems.append(
            f"group_size={cfg.group_size} gives every group a single reward, so the "
            f"{cfg.advantage_mode!r} advantage is always 0: set group_size >= 2 "
            "(or advantage_mode=none)"
        )
    if cfg.beta < 0:
        problems.append(f"beta={cfg.beta} must be >= 0")
    if cfg.ref_model and cfg.beta == 0:
        problems.append(
            f"ref_model={cfg.ref_model!r} is set but beta=0, so it would be loaded for nothing: "
            "set beta > 0 or ref_model=''"
        )
    if not 0 < cfg.log_ratio_cap <= 80:
        problems.append(f"log_ratio_cap={cfg.log_ratio_cap} must be in (0, 80]")
    if cfg.overlong_buffer < 0 or cfg.overlong_buffer > cfg.max_new_tokens:
        problems.append(
            f"overlong_buffer={cfg.overlong_buffer} must be in [0, max_new_tokens="
            f"{cfg.max_new_tokens}]"
        )
    if cfg.overlong_penalty < 0:
        problems.append(f"overlong_penalty={cfg.overlong_penalty} must be >= 0")


def _check_batching(cfg, problems: list[str]) -> None:
    n = cfg.prompts_per_step * cfg.group_size
    mini = cfg.minibatch_size or n
    micro = cfg.microbatch_size or mini
    if cfg.minibatch_size and n % cfg.minibatch_size:
        divisors = [d for d in range(1, n + 1) if n % d == 0]
        problems.append(
            f"minibatch_size={cfg.minibatch_size} must divide the rollout batch N = "
            f"prompts_per_step·group_size = {cfg.prompts_per_step}·{cfg.group_size} = {n}; "
            f"choose one of {divisors} or change prompts_per_step/group_size"
        )
    elif cfg.microbatch_size and mini % cfg.microbatch_size:
        problems.append(f"microbatch_size={cfg.microbatch_size} must divide minibatch_size={mini}")
    if cfg.minibatch_size > n:
        problems.append(f"minibatch_size={cfg.minibatch_size} exceeds the rollout batch N={n}")
    if micro > mini:
        problems.append(f"microbatch_size={micro} exceeds minibatch_size={mini}")


def _check_distributed(cfg, problems: list[str], world: int) -> None:
    """Every rank must hold the same number of whole groups and of mini-batch rows, so that
    FSDP's collectives (one set per forward/backward) run in lockstep on all ranks."""
    if not cfg.distributed or world <= 1:
        return
    n = cfg.prompts_per_step * cfg.group_size
    mini = cfg.minibatch_size or n
    if cfg.prompts_per_step % world:
        fit = [p for p in range(world, 4 * world + 1, world)]
        problems.append(
            f"distributed: prompts_per_step={cfg.prompts_per_step} must be a multiple of the "
            f"world size {world} (each rank generates whole groups of an equal share); "
            f"choose e.g. one of {fit}"
        )
        return
    if mini % world:
        problems.append(
            f"distributed: minibatch_size={mini} must be a multiple of the world size {world} "
            "(each rank takes minibatch_size/world rows of its own groups per optimiser step)"
        )
        return
    local = mini // world
    if cfg.microbatch_size and local % cfg.microbatch_size:
        problems.append(
            f"distributed: microbatch_size={cfg.microbatch_size} (per rank) must divide the "
            f"per-rank mini-batch minibatch_size/world = {mini}/{world} = {local}"
        )


def _check_paths(cfg, problems: list[str]) -> None:
    for name in ("model", "train_data"):
        value = getattr(cfg, name)
        if value != "tiny" and not Path(value).exists():
            problems.append(f"{name}={value!r} does not exist (give a local path, or 'tiny')")
    if cfg.tokenizer and not Path(cfg.tokenizer).exists():
        problems.append(f"tokenizer={cfg.tokenizer!r} does not exist")
    if cfg.ref_model and not Path(cfg.ref_model).exists():
        problems.append(f"ref_model={cfg.ref_model!r} does not exist")
    if cfg.eval_data and cfg.eval_data != "tiny" and not Path(cfg.eval_data).exists():
        problems.append(f"eval_data={cfg.eval_data!r} does not exist")
    if cfg.model == "tiny" and cfg.tokenizer:
        problems.append("model='tiny' builds its own tokenizer: leave tokenizer empty")


def check_config(cfg, *, check_paths: bool, suggest: Callable[[str, object], str]) -> list[str]:
    """All problems of the resolved ``cfg`` (empty when valid)."""
    problems: list[str] = []
    _choice(problems, "dtype", cfg.dtype, DTYPES, suggest)
    _choice(problems, "optimizer", cfg.optimizer, OPTIMIZERS, suggest)
    _choice(problems, "on_bad_rows", cfg.on_bad_rows, ON_BAD_ROWS, suggest)
    _choice(problems, "data_schema", cfg.data_schema, SCHEMAS, suggest)
    _choice(problems, "generation", cfg.generation, GENERATIONS, suggest)
    if not re.fullmatch(r"auto|cpu|cuda|cuda:\d{1,3}", cfg.device):
        problems.append(
            f"device={cfg.device[:40]!r} must be auto, cpu, cuda or cuda:N (N a GPU index)"
        )
    if not 0 <= cfg.seed < 2**32:
        problems.append(f"seed={cfg.seed} must be in [0, 2**32) (numpy's seed range)")
    for name, value in vars(cfg).items():  # NaN passes every comparison below: reject it here
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{name}={value} is not a finite number")
    _choice(problems, "tiny_task", cfg.tiny_task, TASKS, suggest)
    _positive(problems, cfg, ("prompts_per_step", "group_size", "max_new_tokens", "lr"))
    _positive(problems, cfg, ("epochs_per_rollout", "eval_k", "keep_checkpoints"))
    _positive(problems, cfg, ("logprob_chunk_size", "tiny_task_size", "reward_timeout_s"))
    _positive(
        problems,
        cfg,
        (
            "minibatch_size", "microbatch_size", "generation_batch_size", "max_prompt_tokens",
            "warmup_steps", "max_grad_norm", "weight_decay", "samples_every", "num_samples_shown",
            "eval_every", "eval_max_new_tokens", "eval_limit", "save_every", "num_threads",
            "dynamic_sampling_max_rounds", "microbatch_tokens", "total_steps", "max_consecutive_skips",
        ),
        allow_zero=True,
    )  # fmt: skip
    if not cfg.temperature > 0:
        problems.append(f"temperature={cfg.temperature} must be > 0 (use a small value, not 0)")
    if not cfg.eval_temperature > 0:
        problems.append(f"eval_temperature={cfg.eval_temperature} must be > 0")
    if not 0 < cfg.top_p <= 1:
        problems.append(f"top_p={cfg.top_p} must be in (0, 1]")
    for name in ("adam_beta1", "adam_beta2"):
        if not 0 <= getattr(cfg, name) < 1:
            problems.append(f"{name}={getattr(cfg, name)} must be in [0, 1)")
    if cfg.optimizer == "sgd" and cfg.weight_decay:
        problems.append("weight_decay applies to adamw only: set weight_decay=0 or optimizer=adamw")
    if any(s < 1 for s in cfg.debug_inject_nan_logp_at_steps):
        problems.append("debug_inject_nan_logp_at_steps holds step numbers, which start at 1")
    if cfg.reward not in available_rewards():
        problems.append(
            f"reward={cfg.reward!r} is not registered{suggest(cfg.reward, available_rewards())}; "
            f"available: {available_rewards()}"
        )
    _check_method(cfg, problems, suggest)
    _check_batching(cfg, problems)
    _check_distributed(cfg, problems, int(os.environ.get("WORLD_SIZE", "1") or 1))
    if check_paths:
        _check_paths(cfg, problems)
    return problems
