"""The trainer's one config: a dataclass whose field docstrings are its documentation.

Sources, later ones winning: the dataclass defaults → a preset (``llm.config.presets``) → a YAML
file (``--config``) → ``--set key=value`` overrides (values parsed as YAML, then coerced to the field's
type). ``resolve`` fills the method-dependent fields left empty (clip widths, advantage mode,
aggregation, DAPO's dynamic sampling and overlong buffer) from the method's row in
``ticgrpo.METHODS``; ``validate`` rejects every invalid combination before any model is loaded,
each message naming the field and what to change. The resolved config is saved as the run
folder's ``config.yaml``.

Reading the sources (``coerce``, ``apply_overrides``, ``parse_set``, ``load_yaml``,
``build_config``) and writing ``config.yaml`` (``save_yaml``, ``to_dict``) live in
``llm.config.build``, the module callers import; the rules themselves are in
``llm.config.checks``.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
from dataclasses import dataclass, field, fields

from llm.config.checks import check_config


class ConfigError(ValueError):
    """An invalid config; ``problems`` lists every finding (one line each)."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("invalid config:\n  - " + "\n  - ".join(self.problems))


@dataclass
class TrainConfig:
    # -- model --
    model: str = "tiny"
    """Local path of a transformers causal LM, or "tiny" to build the tiny model in the run dir."""
    tokenizer: str = ""
    """Tokenizer path; empty means the model's own."""
    dtype: str = "auto"
    """Weights dtype: auto (bfloat16 on GPU, float32 on CPU) | float32 | bfloat16 | float16."""
    device: str = "auto"
    """auto (cuda when available, else cpu) | cpu | cuda | cuda:N."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward to save memory (slower)."""
    num_threads: int = 0
    """torch CPU threads; 0 leaves torch's default."""
    seed: int = 0
    """Seeds the model init of "tiny", the data order, sampling and mini-batch shuffles."""
    # -- data --
    train_data: str = "tiny"
    """Training file (.parquet/.jsonl/.json), or "tiny" to write the synthetic task."""
    data_schema: str = "auto"
    """Loader schema: auto | dapo | plain | fields (see llm.data.loaders)."""
    instruction: str = "default"
    """Appended to plain problems: default (the boxed-answer instruction) | none | literal text."""
    chat_template: bool = True
    """Render prompts with the tokenizer's chat template (else a plain User/Assistant format)."""
    on_bad_rows: str = "raise"
    """raise: stop at the first bad data row | skip: drop bad rows, count them in the log."""
    max_prompt_tokens: int = 0
    """Prompts longer than this are an error (or skipped, per on_bad_rows); 0 disables."""
    tiny_task: str = "copy"
    """Synthetic task written when train_data is "tiny": copy | add (see llm.data.tasks)."""
    tiny_task_size: int = 4096
    """Number of synthetic problems written when train_data is "tiny"."""
    # -- reward --
    reward: str = "math"
    """Registered reward name (llm.rewards.registry.available_rewards()): math | answer_tag |
    tiny_task | code (sandboxed program tests, docs/SANDBOX.md)."""
    reward_timeout_s: float = 5.0
    """Per-completion time limit of the reward check, in seconds."""
    # -- rollout --
    prompts_per_step: int = 16
    """P: prompts per rollout (each step draws the next P prompts of the shuffled data)."""
    group_size: int = 8
    """G: sampled completions per prompt; the rollout holds N = P·G trajectories."""
    max_new_tokens: int = 1024
    """Length budget of a completion; completions without EOS within it are flagged truncated."""
    temperature: float = 1.0
    """Sampling temperature (the log-probs are of the same tempered distribution)."""
    top_p: float = 1.0
    """Nucleus sampling threshold; 1.0 samples from the full distribution."""
    generation: str = "plain"
    """Sampling path: plain (llm.rollout.sampling.generate, dynamic KV cache; the reference) |
    static (llm.rollout.static_cache.generate_fast: static KV cache, decode step compiled on
    CUDA)."""
    generation_batch_size: int = 0
    """Sequences per generate call; 0 means all N at once on CPU and, on CUDA, the largest
    batch whose KV cache fits in free memory (llm.rollout.static_cache.auto_batch_size)."""
    # -- method --
    method: str = "grpo"
    """Estimator: grpo | tic_grpo | gspo | dapo | dr_grpo | pg (rows of ticgrpo.METHODS)."""
    eps_low: float | None = None
    """Lower clip width; null means the method's recommendation."""
    eps_high: float | None = None
    """Upper clip width; null means the method's recommendation (dapo: 0.28)."""
    advantage_mode: str = ""
    """std | mean | rloo | length_corrected | none; empty means the method's recommendation."""
    std_kind: str = "sample"
    """Group standard deviation of the std advantage: sample | population."""
    aggregation: str = ""
    """How token terms become a scalar; empty means the method's (see ticgrpo.AGGREGATIONS)."""
    tic_clip: str = "truncate"
    """TIC-GRPO's upper clip reading: truncate (min(w,1+eps)·A) | ppo (pessimistic)."""
    no_is: bool = False
    """No-IS ablation: one gradient at θ_old per rollout, reused for every inner step."""
    beta: float = 0.0
    """KL penalty weight; > 0 loads a frozen reference model."""
    kl_estimator: str = "k3"
    """KL estimator per token: k1 | k2 | k3."""
    ref_model: str = ""
    """Reference model path for beta > 0; empty means the initial policy (the model path)."""
    log_ratio_cap: float = 20.0
    """Log-ratios are clamped above at this before exp (no overflow)."""
    dynamic_sampling: bool | None = None
    """Drop groups whose rewards are all equal and refill (DAPO); null means on for dapo only."""
    dynamic_sampling_max_rounds: int = 4
    """Extra generation rounds allowed to refill dropped groups before using zero-signal ones."""
    overlong_buffer: int | None = None
    """DAPO soft overlong shaping: the last this-many tokens of the budget are penalised
    linearly; null means max_new_tokens // 5 for dapo, 0 (off) otherwise."""
    overlong_penalty: float = 1.0
    """Largest overlong penalty, reached at max_new_tokens."""
    mask_truncated: bool = False
    """Give truncated completions zero weight in the loss (overlong filtering)."""
    # -- update --
    minibatch_size: int = 0
    """Sequences per optimiser step; must divide N; 0 means the whole rollout."""
    microbatch_size: int = 0
    """Sequences per forward/backward pass (gradient accumulation); must divide minibatch_size;
    0 means minibatch_size."""
    microbatch_tokens: int = 0
    """Length-aware micro-batching: > 0 sorts each mini-batch's rows by prompt + completion
    length and cuts it into micro-batches of at most this many PADDED tokens (rows × the
    micro-batch's longest prompt + longest completion; a longer row goes alone), at most
    microbatch_size rows each when that is set; the old/reference log-prob passes do the same.
    The loss normalisers stay the mini-batch's, so the gradient is unchanged (up to float
    rounding); only padding FLOPs go. 0 means fixed micro-batches of microbatch_size rows.
    Under distributed=true the ranks run the same (largest) number of micro-batches."""
    epochs_per_rollout: int = 1
    """Passes over the rollout; inner steps K = epochs_per_rollout · N / minibatch_size."""
    optimizer: str = "adamw"
    """sgd (plain stochastic gradient ascent, no momentum) | adamw."""
    lr: float = 1e-6
    """Learning rate (peak, after warmup)."""
    weight_decay: float = 0.0
    """Decoupled weight decay (adamw only)."""
    adam_beta1: float = 0.9
    """AdamW β1 (decay of the first-moment estimate)."""
    adam_beta2: float = 0.999
    """AdamW β2 (decay of the second-moment estimate)."""
    warmup_steps: int = 0
    """Linear learning-rate warmup over this many optimiser steps."""
    max_grad_norm: float = 1.0
    """Gradient clipping threshold on the global norm; 0 disables clipping."""
    guard_parameters: bool = True
    """Undo an optimiser step that leaves any parameter non-finite (restoring the parameters and
    optimiser state, at the memory cost of one copy of both) and count it as skipped."""
    max_consecutive_skips: int = 20
    """Stop the run with an error after this many skipped optimiser steps in a row (non-finite
    loss, gradient or parameters); 0 never stops."""
    reuse_onpolicy_logp: bool = True
    """Skip the separate old-log-prob pass when it is redundant: with one inner step over the
    whole rollout (epochs_per_rollout=1, one mini-batch), or under no_is, θ = θ_old when the
    loss is formed, so old_logp is the training forward's own log-probs, detached (same values
    and gradient; entropy is logged from that forward). False always runs the separate pass."""
    logprob_chunk_size: int = 1024
    """Token positions per lm_head chunk in the log-prob pass (memory vs speed)."""
    # -- loop --
    total_steps: int = 100
    """Number of rollouts (outer steps) of the run; 0 means one epoch, len(train) //
    prompts_per_step steps, counted once the data is loaded (every prompt used at most once)."""
    samples_every: int = 10
    """Print and record a table of sample completions every this many steps; 0 disables."""
    num_samples_shown: int = 4
    """Rows of that table."""
    eval_data: str = ""
    """AIME-style evaluation file; empty disables evaluation ("tiny": a held-out tiny task)."""
    eval_every: int = 0
    """Evaluate every this many steps (and at the end); 0 evaluates only at the end."""
    eval_k: int = 4
    """Samples per evaluation problem (avg@k, pass@k)."""
    eval_max_new_tokens: int = 0
    """Length budget during evaluation; 0 means max_new_tokens."""
    eval_temperature: float = 1.0
    """Sampling temperature during evaluation."""
    eval_limit: int = 0
    """Evaluate on the first this-many problems; 0 means all."""
    save_every: int = 0
    """Checkpoint every this many steps (and always at the end); 0 means only at the end."""
    keep_checkpoints: int = 2
    """Number of checkpoints kept in the run folder."""
    tensorboard: bool = True
    """Also write TensorBoard scalars (when tensorboard is installed)."""
    progress: bool = True
    """Show a tqdm progress bar."""
    distributed: bool = False
    """Data parallel over the processes of a torchrun launch (FSDP2, whole groups per rank);
    ignored in a plain single process. See docs/TRAINER.md, "Multi-GPU"."""
    debug_inject_nan_logp_at_steps: list[int] = field(default_factory=list)
    """Test-only fault injection: steps whose training log-probs are replaced by NaN."""


FIELDS = {f.name: f for f in fields(TrainConfig)}


def field_docs() -> dict[str, str]:
    """Field name -> its docstring (the string literal written under the field)."""
    tree = ast.parse(inspect.getsource(TrainConfig))
    body = tree.body[0].body
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr):
            if isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _suggest(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def resolve(cfg: TrainConfig) -> TrainConfig:
    """Fill the method-dependent fields left empty from ``ticgrpo.METHODS[cfg.method]``.

    Unknown methods are left for ``validate`` to report.
    """
    from ticgrpo import METHODS

    row = METHODS.get(cfg.method)
    if row is None:
        return cfg
    dapo = cfg.method == "dapo"
    return dataclasses.replace(
        cfg,
        eps_low=row.eps_low if cfg.eps_low is None else cfg.eps_low,
        eps_high=row.eps_high if cfg.eps_high is None else cfg.eps_high,
        advantage_mode=cfg.advantage_mode or row.advantage_mode,
        aggregation=cfg.aggregation or row.aggregation,
        dynamic_sampling=dapo if cfg.dynamic_sampling is None else cfg.dynamic_sampling,
        overlong_buffer=(cfg.max_new_tokens // 5 if dapo else 0)
        if cfg.overlong_buffer is None
        else cfg.overlong_buffer,
    )


def validate(cfg: TrainConfig, *, check_paths: bool = True) -> TrainConfig:
    """Resolve ``cfg`` and check it; ConfigError listing every problem. Returns the resolved
    config. Nothing heavy is loaded (no model, no data beyond file existence)."""
    cfg = resolve(cfg)
    problems = check_config(cfg, check_paths=check_paths, suggest=_suggest)
    if problems:
        raise ConfigError(problems)
    return cfg
