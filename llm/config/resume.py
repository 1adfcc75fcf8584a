"""Which settings a ``--resume`` may change, and the check that refuses the others.

A resumed run must stay the run its folder describes: the method, the data, the seed, the batch
shape and the optimiser decide every later step, so changing them mid-run would make
``config.yaml`` and ``metrics.jsonl`` describe a run that never happened. Only the keys in
``RESUMABLE`` may differ from the saved ``config.yaml``; each takes effect from the next step:

- length and cadence: ``total_steps``, ``save_every``, ``keep_checkpoints``, evaluation
  (``eval_*``) and logging (``samples_every``, ``num_samples_shown``, ``tensorboard``,
  ``progress``);
- resources, which change how the same computation is laid out, not what it is:
  ``device``, ``distributed`` (checkpoints are in the single-process format, so a run resumes
  on any number of processes), ``num_threads``, ``generation``, ``generation_batch_size``,
  ``microbatch_size``, ``microbatch_tokens``, ``logprob_chunk_size``,
  ``gradient_checkpointing``, ``reward_timeout_s``;
- ``lr``: written into the restored optimiser's parameter groups (``apply_lr``), the usual
  way to lower the rate of a run that has started to diverge;
- run safety: ``max_consecutive_skips``, ``guard_parameters``, and the test-only ``debug_*`` fault injections.
"""

from __future__ import annotations

import dataclasses

RESUMABLE = frozenset({
    "total_steps", "save_every", "keep_checkpoints",
    "eval_data", "eval_every", "eval_k", "eval_max_new_tokens", "eval_temperature", "eval_limit",
    "samples_every", "num_samples_shown", "tensorboard", "progress",
    "device", "distributed", "num_threads", "generation", "generation_batch_size", "microbatch_size",
    "microbatch_tokens", "logprob_chunk_size", "gradient_checkpointing", "reward_timeout_s",
    "lr", "max_consecutive_skips", "guard_parameters", "debug_inject_nan_logp_at_steps",
})  # fmt: skip


def resume_differences(saved, new) -> tuple[list[str], list[str]]:
    """(allowed, refused): one ``"key: old → new"`` line per field where the resolved configs
    ``saved`` (the run's config.yaml) and ``new`` differ, split by ``RESUMABLE``."""
    allowed, refused = [], []
    for f in dataclasses.fields(saved):
        old, value = getattr(saved, f.name), getattr(new, f.name, None)
        if old != value:
            line = f"{f.name}: {old!r} → {value!r}"
            (allowed if f.name in RESUMABLE else refused).append(line)
    return allowed, refused


def apply_lr(optimizer, scheduler, lr: float) -> None:
    """Make ``lr`` the peak rate of a restored optimiser and its ``LambdaLR`` schedule: the
    schedule's base rates become ``lr`` and each group's current rate ``lr · λ(step)``."""
    for group in optimizer.param_groups:
        group["initial_lr"] = lr
    scheduler.base_lrs = [lr] * len(optimizer.param_groups)
    for group, fn in zip(optimizer.param_groups, scheduler.lr_lambdas):
        group["lr"] = lr * fn(scheduler.last_epoch)
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]


def saved_config(path):
    """The resolved ``TrainConfig`` a run folder's ``config.yaml`` holds; ``ConfigError`` when
    it is missing, empty or unreadable (an empty file must not silently mean "defaults")."""
    from llm.config import build as C

    data = saved_config_dict(path)
    return C.resolve(C.apply_overrides(C.TrainConfig(), data, where=str(path)))


def saved_config_dict(path) -> dict:
    """The raw mapping of a run's ``config.yaml``; ``ConfigError`` when missing or empty."""
    from llm.config import build as C

    data = C.load_yaml(path)
    if not data:
        raise C.ConfigError([
            f"{path} is empty: it should hold the run's settings; restore it (e.g. from a backup) "
            "or start a new run"
        ])  # fmt: skip
    return data


def check_resume_config(cfg, path) -> list[str]:
    """The allowed changes of ``cfg`` against the saved config at ``path`` (to report); raises
    ``ConfigError`` listing every refused difference."""
    from llm.config.train_config import ConfigError

    allowed, refused = resume_differences(saved_config(path), cfg)
    if refused:
        raise ConfigError([
            *(f"--resume cannot change {line}" for line in refused),
            f"(the run in {path.parent} was made with the old values: start a new run with "
            "another --out to change them; a resume may change only "
            "llm.config.resume.RESUMABLE keys)",
        ])  # fmt: skip
    return allowed


def check_resume_length(total_steps: int, checkpoint_step: int) -> None:
    """A resume must not end before its checkpoint (config.yaml would then name fewer steps
    than the run holds)."""
    from llm.config.train_config import ConfigError

    if total_steps < checkpoint_step:
        raise ConfigError([
            f"--resume: total_steps={total_steps} is below the checkpoint's step "
            f"{checkpoint_step}; give total_steps >= {checkpoint_step}"
        ])  # fmt: skip
