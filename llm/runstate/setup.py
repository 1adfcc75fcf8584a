"""Set-up stages of a training run: the run folder, data, model, optimiser.

Order matters for reliability: the config is validated first (``llm.config.train_config``),
then the data is loaded and checked with the tokenizer only, and only then is a model loaded, so a bad row or a
too-long prompt fails in seconds with a message naming the file, the row and the field.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from llm.config import build as C
from llm.config.resume import check_resume_config
from llm.data.loaders import BOXED_INSTRUCTION, check_prompt_lengths, load_examples
from llm.data.tiny import build_tiny, write_tiny_task
from llm.parallel.comm import device_for
from llm.runstate.run_folder import check_fresh, find_resume_point

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
    checkpoint: Path | None = None  # the checkpoint a resume continues from


@dataclass
class Data:
    train: list  # llm.data.loaders.Example
    eval: list
    skipped: int  # bad rows dropped under on_bad_rows="skip"


def prepare_run(
    cfg: C.TrainConfig,
    run_dir: Path,
    *,
    resume: bool,
    overwrite: bool = False,
    start_over: bool = False,
) -> RunPaths:
    """Check the run folder, build "tiny" artefacts, save config.yaml; resolve every path.

    The caller holds the folder's ``RunLock``. A fresh run refuses a non-empty folder unless
    ``overwrite`` (``llm.runstate.run_folder.check_fresh``). A resume first checks that ``cfg``
    changes only resumable keys of the saved config.yaml and that a usable checkpoint exists
    (else it refuses, touching nothing, unless ``start_over``); ``RunPaths.checkpoint`` is the
    one to continue from. config.yaml is written here for a run that starts at step 1; a
    resumed run writes it once its checkpoint has loaded (``save_run_config``).
    """
    checkpoint = None
    if resume:
        check_resume_config(cfg, run_dir / "config.yaml")
        checkpoint = find_resume_point(run_dir, start_over=start_over)
    else:
        rebuilt = [name for name, tiny in (("tiny_model", cfg.model), ("data/train.jsonl",
                   cfg.train_data), ("data/eval.jsonl", cfg.eval_data)) if tiny == "tiny"]  # fmt: skip
        check_fresh(run_dir, overwrite=overwrite, rebuilt=tuple(rebuilt))
    model = Path(cfg.model)
    if cfg.model == "tiny":
        model = ensure_tiny_model(run_dir / "tiny_model", seed=cfg.seed)
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
    if checkpoint is None:
        save_run_config(cfg, run_dir)
    return RunPaths(
        run_dir=run_dir,
        model=model,
        tokenizer=Path(cfg.tokenizer) if cfg.tokenizer else model,
        train_data=train,
        eval_data=evald,
        ref_model=(Path(cfg.ref_model) if cfg.ref_model else model) if cfg.beta > 0 else None,
        checkpoint=checkpoint,
    )


def save_run_config(cfg: C.TrainConfig, run_dir: Path) -> None:
    """Write the resolved config as the run folder's config.yaml (atomically)."""
    C.save_yaml(cfg, run_dir / "config.yaml")


#: Files whose presence marks a finished tiny model folder (the tokenizer is written last).
TINY_MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def ensure_tiny_model(path: Path, *, seed: int) -> Path:
    """The tiny model folder at ``path``, built when missing or half-built (a build that was
    interrupted, e.g. before its tokenizer was written). A build goes to a temporary folder
    renamed into place, so ``path`` is only ever absent or complete."""
    import shutil

    if all((path / name).is_file() for name in TINY_MODEL_FILES):
        return path
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    build_tiny(tmp, seed=seed)
    if path.exists():  # half-built by an earlier run: our own artefact, rebuilt
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


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
    checked = check_prompt_lengths(  # every prompt through the tokenizer, now rather than at step n
        train,
        tokenizer,
        cfg.max_prompt_tokens or None,
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
        evals = check_prompt_lengths(
            evals, tokenizer, None, on_error=cfg.on_bad_rows, chat_template=cfg.chat_template
        ).examples
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
