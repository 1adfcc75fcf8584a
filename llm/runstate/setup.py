"""Set-up stages of a training run: the run folder, data, model, optimiser.

Order matters for reliability: the config is validated first (``llm.config.train_config``),
then the data is loaded and checked with the tokenizer only, and only then is a model loaded, so a bad row or a
too-long prompt fails in seconds with a message naming the file, the row and the field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from llm.config import build as C
from llm.data.loaders import BOXED_INSTRUCTION, check_prompt_lengths, load_examples
from llm.data.tiny import build_tiny, write_tiny_task
from llm.parallel.comm import device_for
from llm.runstate.checkpoint import latest_checkpoint

#: Held-out problems written for eval_data="tiny".
TINY_EVAL_SIZE = 256


@dataclass
class RunPaths:
    run_dir: Path
    model: Path
    tokenizer: Path
    train_data: Path
    eval_data: Path | None
    ref_model: Path | None


@dataclass
class Data:
    train: list  # llm.data.loaders.Example
    eval: list
    skipped: int  # bad rows dropped under on_bad_rows="skip"


def prepare_run(cfg: C.TrainConfig, run_dir: Path, *, resume: bool) -> RunPaths:
    """Create the run folder, build "tiny" artefacts, save config.yaml; resolve every path.

    Refuses to start a fresh run in a folder that already holds checkpoints (``--resume`` or
    another ``--out`` is what the user wants).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume and latest_checkpoint(run_dir) is not None:
        raise C.ConfigError([
            f"{run_dir} already holds checkpoints: pass --resume to continue that run, or "
            "choose a new --out folder"
        ])  # fmt: skip
    model = Path(cfg.model)
    if cfg.model == "tiny":
        model = run_dir / "tiny_model"
        if not (model / "config.json").exists():
            build_tiny(model, seed=cfg.seed)
    train = Path(cfg.train_data)
    if cfg.train_data == "tiny":
        train = run_dir / "data" / "train.jsonl"
        if not train.exists():
            write_tiny_task(train, cfg.tiny_task_size, cfg.seed, kind=cfg.tiny_task)
    evald = Path(cfg.eval_data) if cfg.eval_data else None
    if cfg.eval_data == "tiny":
        evald = run_dir / "data" / "eval.jsonl"
        if not evald.exists():
            write_tiny_task(evald, TINY_EVAL_SIZE, cfg.seed + 1, kind=cfg.tiny_task)
    C.save_yaml(cfg, run_dir / "config.yaml")
    return RunPaths(
        run_dir=run_dir,
        model=model,
        tokenizer=Path(cfg.tokenizer) if cfg.tokenizer else model,
        train_data=train,
        eval_data=evald,
        ref_model=(Path(cfg.ref_model) if cfg.ref_model else model) if cfg.beta > 0 else None,
    )


def _instruction(cfg: C.TrainConfig) -> str | None:
    if cfg.instruction == "default":
        return BOXED_INSTRUCTION
    return None if cfg.instruction in ("none", "") else cfg.instruction


def load_data(cfg: C.TrainConfig, paths: RunPaths):
    """(tokenizer, Data): examples loaded and length-checked, before any model is loaded."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(paths.tokenizer)
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is None:
        raise C.ConfigError([f"tokenizer {paths.tokenizer} has neither a pad nor an eos token"])
    kwargs = dict(schema=cfg.data_schema, on_error=cfg.on_bad_rows, instruction=_instruction(cfg))
    loaded = load_examples(paths.train_data, **kwargs)
    train, skipped = loaded.examples, loaded.skipped
    if cfg.max_prompt_tokens:
        checked = check_prompt_lengths(
            train,
            tokenizer,
            cfg.max_prompt_tokens,
            on_error=cfg.on_bad_rows,
            chat_template=cfg.chat_template,
        )
        train, skipped = checked.examples, skipped + checked.skipped
    if len(train) < cfg.prompts_per_step:
        raise C.ConfigError([
            f"train_data {paths.train_data} has {len(train)} usable examples, fewer than "
            f"prompts_per_step={cfg.prompts_per_step}"
        ])  # fmt: skip
    evals: list = []
    if paths.eval_data is not None:
        evals = load_examples(paths.eval_data, **kwargs).examples
        evals = evals[: cfg.eval_limit] if cfg.eval_limit else evals
    return tokenizer, Data(train=train, eval=evals, skipped=skipped)


def one_epoch_steps(cfg: C.TrainConfig, num_examples: int) -> C.TrainConfig:
    """``cfg`` with ``total_steps=0`` replaced by one epoch, ``num_examples // prompts_per_step``
    rollouts (a last partial batch is dropped, so every prompt is used at most once)."""
    if cfg.total_steps:
        return cfg
    return dataclasses.replace(cfg, total_steps=num_examples // cfg.prompts_per_step)


def _dtype(cfg: C.TrainConfig, device: torch.device) -> torch.dtype:
    if cfg.dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, cfg.dtype)


def load_model(cfg: C.TrainConfig, paths: RunPaths, *, device: torch.device | None = None):
    """(policy, frozen reference or None, device); the reference exists only when beta > 0.

    ``device`` overrides ``cfg.device`` (the trainer passes its communicator's device)."""
    from transformers import AutoModelForCausalLM

    device = device or device_for(cfg)
    dtype = _dtype(cfg, device)
    model = AutoModelForCausalLM.from_pretrained(paths.model, dtype=dtype).to(device)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False  # training passes; generate() asks for its cache itself
    ref = None
    if paths.ref_model is not None:
        ref = AutoModelForCausalLM.from_pretrained(paths.ref_model, dtype=dtype).to(device)
        ref.eval().requires_grad_(False)
    return model, ref, device


def make_optimizer(cfg: C.TrainConfig, model):
    """SGD (plain: no momentum, no weight decay — the paper's "vanilla SGA") or AdamW, with a
    linear warmup schedule stepped once per inner step."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.0)
    else:
        opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                weight_decay=cfg.weight_decay)  # fmt: skip
    warm = cfg.warmup_steps
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0
    )
    return opt, sched
