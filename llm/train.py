"""``ticgrpo train``: GRPO-family RL of a causal LM, one readable loop.

    ticgrpo train [--preset NAME | --config FILE] [--set key=value ...] [--out RUN_DIR]
                  [--resume [--start-over] | --overwrite]

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
step, so the metrics match an uninterrupted run on CPU). The run folder's rules (one writer, no
silent restart, which keys a resume may change, Ctrl-C saves) are in docs/RELIABILITY.md, "The
run folder".
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

import torch

from llm.config import build as C
from llm.config.resume import saved_config_dict
from llm.data.readers import DataError
from llm.evaluate import evaluate_on_ranks
from llm.parallel.checkpoint import save_full_checkpoint
from llm.parallel.comm import finish, local_prompts, reduce_step_metrics, start
from llm.parallel.fsdp import unsharded
from llm.rewards.math_worker import WorkerError
from llm.rollout.experience import collect
from llm.runstate.errors import CheckpointError
from llm.runstate.logging import NullLogger, RunLogger, printable
from llm.runstate.run import Run, open_run
from llm.runstate.run_folder import RunFolderError
from llm.runstate.stopping import Stopped, StopSignals
from llm.update.batching import sequence_logprobs
from llm.update.inner_steps import inner_steps, reuses_onpolicy_logp
from ticgrpo import group_advantages

#: Problems with what the user asked for: one line on stderr and exit code 2, no traceback.
USER_ERRORS = (C.ConfigError, RunFolderError, CheckpointError, DataError, WorkerError)


class TrainingAborted(RuntimeError):
    """The run cannot make progress (e.g. every optimiser step is skipped)."""


def train(
    cfg: C.TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    start_over: bool = False,
) -> dict:
    """Run (or resume) training into ``run_dir``; return the last step's logged metrics.

    A fresh run needs an empty ``run_dir`` (``overwrite`` replaces an earlier run in it); a
    resume needs a usable checkpoint (``start_over`` begins again at step 1 when there is
    none) and may change only ``llm.config.resume.RESUMABLE`` keys. One process writes a run
    folder (``llm.runstate.run_folder.RunLock``). SIGINT/SIGTERM stop after the current step
    with a checkpoint and raise ``llm.runstate.stopping.Stopped``.
    Under torchrun with ``distributed=true`` every rank runs this; a plain run is a world of one
    (``llm.parallel.comm``), through the same code.
    """
    comm = start(cfg)
    try:
        try:
            run = open_run(cfg, Path(run_dir), resume=resume, comm=comm, overwrite=overwrite,
                           start_over=start_over)  # fmt: skip
        except Exception as e:
            if comm.world_size > 1 and getattr(e, "on_every_rank", False):
                _say_on_every_rank(comm, f"ticgrpo train: {_one_line(e)}", e)
            raise
        try:
            with StopSignals(announce=comm.is_main) as stops:
                return _train(run, stops)
        finally:
            run.close()
    finally:
        finish(comm)


def _train(run: Run, stops: StopSignals) -> dict:
    cfg, comm = run.cfg, run.comm
    logger = NullLogger()  # ranks other than 0 write nothing
    if comm.is_main:
        logger = RunLogger(run.run_dir, tensorboard=cfg.tensorboard,
                           resume_step=run.step if run.resumed else None)  # fmt: skip
    bar = _progress(cfg, run.step) if comm.is_main else None
    last: dict = {}
    try:
        for step in range(run.step + 1, cfg.total_steps + 1):
            last, samples, upd = _train_step(run, step)  # stages 1-5
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
            _check_skips(run, upd, step)
            # 8. checkpoint (gathered from the shards when W > 1; rank 0 writes), also on a
            # stop signal: the step is done, so this is the safe point to save and leave
            signum = _stop_signal(stops, comm)
            if signum or _due(step, cfg.save_every, cfg.total_steps):
                save_full_checkpoint(comm, run.run_dir, step, model=run.model,
                                     optimizer=run.optimizer, scheduler=run.scheduler,
                                     trainer_state=run.trainer_state(), keep=cfg.keep_checkpoints,
                                     layout=run.layout)  # fmt: skip
            if signum:
                _stop(run, signum, step)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(reward=_fmt(last.get("reward/mean")), skipped=run.skipped_steps)
    finally:
        if bar is not None:
            bar.close()
        logger.close()
    return last


def _say_on_every_rank(comm, line: str, error: BaseException) -> None:
    """Print ``line`` on this rank and wait for the others to print theirs before any rank
    leaves: under torchrun the launcher ends the other ranks as soon as one exits. One write per
    line keeps the ranks' lines apart on the shared pipe. Marks ``error`` as announced."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
    error.announced = True
    comm.barrier()


def _stop(run: Run, signum: int, step: int) -> None:
    """Raise ``Stopped`` on every rank once each has said so (``_say_on_every_rank``)."""
    stopped = Stopped(f"stopped by {signal.Signals(signum).name} after step {step} "
                      f"(checkpoint saved); continue with: ticgrpo train --out {run.run_dir} "
                      "--resume", signum)  # fmt: skip
    _say_on_every_rank(run.comm, f"ticgrpo train: {stopped}", stopped)
    raise stopped


def _stop_signal(stops: StopSignals, comm) -> int | None:
    """The signal every rank stops on (any rank's counts), or None to go on."""
    anyone = comm.sum([float(stops.requested or 0)])[0] > 0
    return (stops.requested or int(signal.SIGTERM)) if anyone else None


def _check_skips(run: Run, upd, step: int) -> None:
    """Count consecutive skipped optimiser steps across rollouts; stop the run when they
    reach ``cfg.max_consecutive_skips`` (a run that trains nothing must not exit 0)."""
    if upd.skipped < upd.steps:  # a step of this rollout was applied: count from there
        run.consecutive_skips = upd.trailing_skips
    else:
        run.consecutive_skips += upd.skipped
    limit = run.cfg.max_consecutive_skips
    if limit and run.consecutive_skips >= limit:
        raise TrainingAborted(
            f"stopped at step {step}: the last {run.consecutive_skips} optimiser steps were all "
            "skipped (non-finite loss, gradient or parameters); fix the cause (lr, clip widths, "
            "data) and --resume from the last checkpoint, e.g. with a lower --set lr=..."
        )


def _due(step: int, every: int, total: int) -> bool:
    """Every ``every`` steps (0: never) and at the last step."""
    return step == total or bool(every and step % every == 0)


def _train_step(run: Run, step: int) -> tuple[dict, list[dict], object]:
    """One rollout and its K inner steps; advances ``run``; returns (metrics, sample rows, the
    inner steps' ``UpdateResult``).

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
    return metrics, _sample_rows(exp, cfg.num_samples_shown), upd


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
        help="continue the run in --out from its latest complete checkpoint (only the keys in "
        "llm.config.resume.RESUMABLE may change, e.g. total_steps, eval and logging, lr)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start a fresh run in a non-empty --out, deleting the run there (its config, logs, "
        "checkpoints, and the tiny model/data this run builds again); other files are kept",
    )
    p.add_argument(
        "--start-over",
        action="store_true",
        help="with --resume: when the run has no usable checkpoint, begin it again from step 1 "
        "(its logs and checkpoints are moved to RUN/discarded-<time>/)",
    )
    return p


def _check_paths(args, run_dir: Path) -> str | None:
    """What is wrong with --out / --config / the flags, before anything is read or written."""
    if args.start_over and not args.resume:
        return "--start-over goes with --resume (a fresh run in a used folder: --overwrite)"
    if args.overwrite and args.resume:
        return "--overwrite starts a new run; it cannot be combined with --resume"
    if args.config and not Path(args.config).is_file():
        what = "is a folder" if Path(args.config).is_dir() else "does not exist"
        return f"--config {args.config} {what}: give a YAML file"
    if run_dir.exists() and not run_dir.is_dir():
        return f"--out {run_dir} is a file: give a folder for the run"
    if args.resume and not run_dir.is_dir():
        return f"--resume: {run_dir} does not exist (nothing to continue)"
    parent = next((q for q in (run_dir, *run_dir.parents) if q.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        return f"--out {run_dir}: cannot write in {parent}; choose a writable folder"
    return None


def main(argv: list[str] | None = None) -> int:
    """``ticgrpo train``: 0 when done; 2 for a problem with the command, its config, data or
    run folder (one line on stderr, found before training starts); 3 when the run cannot go on
    (e.g. every step skipped); 128+signal when stopped by SIGINT/SIGTERM after saving."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    preset = args.preset or (None if (args.config or args.resume) else "tiny")
    if args.resume and not args.out:
        print("ticgrpo train: --resume needs --out RUN_DIR (the run to continue)", file=sys.stderr)
        return 2
    run_dir = Path(args.out or f"runs/{preset or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}")
    problem = _check_paths(args, run_dir)
    if problem:
        print(f"ticgrpo train: {problem}", file=sys.stderr)
        return 2
    try:
        base = saved_config_dict(run_dir / "config.yaml") if args.resume else None
        cfg = C.build_config(preset=preset, config_file=args.config, overrides=args.overrides,
                             base=base)  # fmt: skip
        last = train(cfg, run_dir, resume=args.resume, overwrite=args.overwrite,
                     start_over=args.start_over)  # fmt: skip
    except Stopped as e:
        if not getattr(e, "announced", False):
            print(f"ticgrpo train: {e}", file=sys.stderr)
        return e.code
    except TrainingAborted as e:
        print(f"ticgrpo train: {e}", file=sys.stderr)
        return 3
    except USER_ERRORS as e:
        if not getattr(e, "announced", False):  # under torchrun each rank may have said it
            print(f"ticgrpo train: {_one_line(e)}", file=sys.stderr)
        return 2
    if os.environ.get("RANK", "0") == "0":  # torchrun: one line, not one per rank
        print(f"run folder: {run_dir}  final reward/mean={_fmt(last.get('reward/mean'))}")
    return 0


def _one_line(e: Exception) -> str:
    """One line; a config error with several problems keeps its list, one per line."""
    if isinstance(e, C.ConfigError) and len(e.problems) > 1:
        return "\n".join(printable(line) for line in str(e).splitlines())
    if isinstance(e, C.ConfigError):
        return printable(f"invalid config: {' '.join(e.problems[0].split())}")
    return printable(" ".join(str(e).split()))


if __name__ == "__main__":
    raise SystemExit(main())
