"""``ticgrpo train``: GRPO-family RL of a causal LM, one readable loop.

    ticgrpo train [--preset NAME | --config FILE] [--set key=value ...] [--out RUN_DIR] [--resume]

Set-up is ``llm.runstate.run.open_run`` (run folder, data, reward, model, optimiser, resume).
Per step: draw P prompts → sample G completions each (``llm.rollout``) → rewards
(``llm.rewards``; DAPO shaping and filtering in ``llm.rollout.experience``) → group advantages
(``ticgrpo.group_advantages``) → old log-probs from the training forward pass
(``llm.update.batching``) → K inner steps (``llm.update.inner_steps``) → metrics → log →
periodic eval → checkpoint (``llm.parallel.checkpoint``). One process or W under torchrun run
this same loop: the communicator (``llm.parallel.comm``) is a world of one in a plain run.

The run folder holds ``config.yaml``, ``metrics.jsonl``, ``samples.jsonl``, ``checkpoints/`` and
(for "tiny") the built model and data. ``--resume`` restores weights, optimiser, scheduler, RNG
streams and the data position and continues exactly (every random draw is seeded from the
step, so the metrics match an uninterrupted run on CPU).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from llm.config import build as C
from llm.evaluate import evaluate_on_ranks
from llm.parallel.checkpoint import save_full_checkpoint
from llm.parallel.comm import finish, local_prompts, reduce_step_metrics, start
from llm.parallel.fsdp import unsharded
from llm.rollout.experience import collect
from llm.runstate.logging import NullLogger, RunLogger
from llm.runstate.run import Run, open_run
from llm.update.batching import sequence_logprobs
from llm.update.inner_steps import inner_steps, reuses_onpolicy_logp
from ticgrpo import group_advantages


def train(cfg: C.TrainConfig, run_dir: str | Path, *, resume: bool = False) -> dict:
    """Run (or resume) training into ``run_dir``; return the last step's logged metrics.

    Under torchrun with ``distributed=true`` every rank runs this; a plain run is a world of one
    (``llm.parallel.comm``), through the same code.
    """
    comm = start(cfg)
    try:
        return _train(open_run(cfg, Path(run_dir), resume=resume, comm=comm), resume)
    finally:
        finish(comm)


def _train(run: Run, resume: bool) -> dict:
    cfg, comm = run.cfg, run.comm
    logger = NullLogger()  # ranks other than 0 write nothing
    if comm.is_main:
        logger = RunLogger(run.run_dir, tensorboard=cfg.tensorboard,
                           resume_step=run.step if resume else None)  # fmt: skip
    bar = _progress(cfg, run.step) if comm.is_main else None
    last: dict = {}
    try:
        for step in range(run.step + 1, cfg.total_steps + 1):
            last, samples = _train_step(run, step)  # stages 1-5
            # 6. periodic evaluation (the problems split over the ranks)
            if run.data.eval and _due(step, cfg.eval_every, cfg.total_steps):
                t0 = time.perf_counter()
                last.update(_evaluate(run, step))
                last["timing/eval_s"] = time.perf_counter() - t0
            # 7. log: one JSON line per step (rank 0), sample completions now and then
            last["data/skipped_rows"] = float(run.data.skipped)
            last = logger.log(step, last)
            if cfg.samples_every and step % cfg.samples_every == 0:
                logger.samples(step, samples)
            # 8. checkpoint (gathered from the shards when W > 1; rank 0 writes)
            if _due(step, cfg.save_every, cfg.total_steps):
                save_full_checkpoint(comm, run.run_dir, step, model=run.model,
                                     optimizer=run.optimizer, scheduler=run.scheduler,
                                     trainer_state=run.trainer_state(), keep=cfg.keep_checkpoints,
                                     layout=run.layout)  # fmt: skip
            if bar is not None:
                bar.update(1)
                bar.set_postfix(reward=_fmt(last.get("reward/mean")), skipped=run.skipped_steps)
    finally:
        if bar is not None:
            bar.close()
        logger.close()
    return last


def _due(step: int, every: int, total: int) -> bool:
    """Every ``every`` steps (0: never) and at the last step."""
    return step == total or bool(every and step % every == 0)


def _train_step(run: Run, step: int) -> tuple[dict, list[dict]]:
    """One rollout and its K inner steps; advances ``run``; returns (metrics, sample rows).

    Each of the W ranks of ``run.comm`` handles its share of the prompts (W = 1: all of them).
    """
    cfg, comm, model = run.cfg, run.comm, run.model
    t_step = time.perf_counter()
    # 1. rollout: P prompts × G samples, scored, shaped, filtered (this rank's P / W)
    with unsharded(model):
        exp = collect(
            model, run.tokenizer, local_prompts(run.stream.next, comm), run.reward,
            num_prompts=cfg.prompts_per_step // comm.world_size, group_size=cfg.group_size,
            max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
            seed=comm.seed(cfg.seed * 1_000_003 + step),
            batch_size=cfg.generation_batch_size or None, overlong_buffer=cfg.overlong_buffer,
            overlong_scale=cfg.overlong_penalty, dynamic_sampling=cfg.dynamic_sampling,
            max_rounds=cfg.dynamic_sampling_max_rounds, comm=comm, generation=cfg.generation,
        )  # fmt: skip
    t_gen = time.perf_counter()
    # 2. advantages [N] and the rows the loss sees
    exp.advantages = _advantages(exp, cfg)
    if cfg.mask_truncated:
        exp.weights = 1.0 - torch.tensor(exp.gen.truncated, dtype=torch.float32)
    # 3. old (and reference) log-probs [N, T] from the training forward pass, not sampling scores;
    # skipped when the only gradient is taken at θ_old (the update then reuses its own forward)
    micro = cfg.microbatch_size or cfg.minibatch_size or len(exp)
    model.train()
    entropy = None
    batching = dict(pad_id=run.pad_id, microbatch=micro, chunk_size=cfg.logprob_chunk_size,
                    microbatch_tokens=cfg.microbatch_tokens, comm=comm)  # fmt: skip
    if not reuses_onpolicy_logp(cfg):
        exp.old_logp, entropy = sequence_logprobs(model, exp, with_entropy=True, **batching)
    if run.ref_model is not None:
        exp.ref_logp, _ = sequence_logprobs(run.ref_model, exp, with_entropy=False, **batching)
    t_lp = time.perf_counter()
    # 4. K inner steps over mini-batches
    upd = inner_steps(model, run.optimizer, run.scheduler, exp, cfg, step=step,
                      pad_id=run.pad_id, inject_nan=step in cfg.debug_inject_nan_logp_at_steps,
                      comm=comm)  # fmt: skip
    t_upd = time.perf_counter()
    run.step, run.skipped_steps = step, run.skipped_steps + upd.skipped
    # 5. metrics: this rank's, then over all ranks (the rollout's statistics already are)
    entropy = upd.entropy if entropy is None else entropy  # [N, T] under θ_old
    tokens = int(exp.lengths.sum())
    token_mask = torch.arange(entropy.shape[1])[None, :] < exp.lengths[:, None]  # [N, T]
    local = dict(upd.metrics)
    local.update({
        "entropy": float(entropy[token_mask].mean()),
        "advantage/abs_mean": float(exp.advantages.abs().mean()),
        "skipped_steps": float(run.skipped_steps),
        "data/epoch": float(run.stream.position // len(run.stream)),
        "timing/generate_s": t_gen - t_step,
        "timing/logprob_s": t_lp - t_gen,
        "timing/update_s": t_upd - t_lp,
        "timing/step_s": time.perf_counter() - t_step,
        "tokens_per_s": tokens / max(time.perf_counter() - t_step, 1e-9),
    })  # fmt: skip
    local.update(run.reward.stats.as_log("reward_check/") if hasattr(run.reward, "stats") else {})
    ent = (float(entropy[token_mask].sum()), float(token_mask.sum()))
    metrics = dict(exp.stats)
    metrics.update(reduce_step_metrics(comm, local, entropy=ent, tokens=tokens))
    return metrics, _sample_rows(exp, cfg.num_samples_shown)


def _advantages(exp, cfg) -> torch.Tensor:
    """[N] group-relative advantages of the shaped rewards (SPEC section 2)."""
    lengths = exp.lengths.float() if cfg.advantage_mode == "length_corrected" else None
    return group_advantages(
        exp.rewards, cfg.group_size, mode=cfg.advantage_mode, lengths=lengths,
        std_kind=cfg.std_kind,
    )  # fmt: skip


def _evaluate(run: Run, step: int) -> dict[str, float]:
    """The eval metrics at ``step``, the problems split over the ranks."""
    cfg = run.cfg
    return evaluate_on_ranks(
        run.comm, run.model, run.tokenizer, run.data.eval, k=cfg.eval_k,
        max_new_tokens=cfg.eval_max_new_tokens or cfg.max_new_tokens,
        temperature=cfg.eval_temperature, top_p=cfg.top_p, reward=run.reward,
        seed=cfg.seed * 7919 + step, batch_size=cfg.generation_batch_size or None,
        chat_template=cfg.chat_template, generation=cfg.generation,
    )  # fmt: skip


def _sample_rows(exp, k: int) -> list[dict]:
    rows = []
    for i in range(min(k, len(exp))):
        j = i * exp.group_size if i * exp.group_size < len(exp) else i  # one row per group
        rows.append({
            "prompt": exp.prompts[j // exp.group_size], "completion": exp.gen.texts[j],
            "answer": exp.answers[j], "reward": float(exp.rewards[j]),
            "advantage": float(exp.advantages[j]),
        })  # fmt: skip
    return rows


def _fmt(value) -> str:
    """A logged number for the terminal; the logger returns non-finite values as None."""
    return f"{value:.3f}" if isinstance(value, (int, float)) else "nan"


def _progress(cfg, start: int):
    if not cfg.progress:
        return None
    from tqdm.auto import tqdm  # the bar is optional; tqdm loads only when it is shown

    return tqdm(total=cfg.total_steps, initial=start, desc="train", dynamic_ncols=True)


def build_parser() -> argparse.ArgumentParser:
    docs = C.field_docs()
    keys = "\n".join(f"  {k:<32} {docs.get(k, '')}" for k in C.FIELDS)
    p = argparse.ArgumentParser(
        prog="ticgrpo train",
        description="Train a causal LM with a GRPO-family method (see docs/TRAINER.md).",
        epilog="config keys (for --set key=value and YAML files):\n" + keys,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", help="tiny (default when no --config) | paper | qwen2.5-1.5b | ...")
    p.add_argument("--config", help="YAML file of config keys")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key (repeatable)",
    )
    p.add_argument("--out", help="run folder (default runs/<preset>-<time>)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its latest complete checkpoint",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    preset = args.preset or (None if (args.config or args.resume) else "tiny")
    if args.resume and not args.out:
        print("ticgrpo train: --resume needs --out RUN_DIR (the run to continue)", file=sys.stderr)
        return 2
    run_dir = Path(args.out or f"runs/{preset or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        base = C.load_yaml(run_dir / "config.yaml") if args.resume else None
        cfg = C.build_config(preset=preset, config_file=args.config, overrides=args.overrides,
                             base=base)  # fmt: skip
    except (C.ConfigError, ValueError) as e:
        print(f"ticgrpo train: {e}", file=sys.stderr)
        return 2
    try:
        last = train(cfg, run_dir, resume=args.resume)
    except C.ConfigError as e:
        print(f"ticgrpo train: {e}", file=sys.stderr)
        return 2
    if os.environ.get("RANK", "0") == "0":  # torchrun: one line, not one per rank
        print(f"run folder: {run_dir}  final reward/mean={_fmt(last.get('reward/mean'))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
