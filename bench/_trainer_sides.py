"""The two sides of bench/bench_trainer_vs_trl.py: the shared workload, TRL's GRPOTrainer, ours.

Each ``run_*`` returns ``{"side", "per_step": [{gen_s, update_s, gen_cpu_s, update_cpu_s,
mean_completion_tokens}], "prompt_digests": [one per RL step], "peak_rss_mb", "peak_cuda_mb",
"cuda_total_mb"}`` for one process; the driver aggregates them. ``prompt_digests[i]`` is
``prompt_digest`` of the P prompts the side sampled for at RL step i (in order), so the driver
can check that both sides worked on the same prompts in the same order.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

#: Qwen2.5-1.5B's architecture (its released config.json): see bench/bench_logprobs.PRESETS.
QWEN_ARCH = "qwen2.5-1.5b"
ARCHS = ("tiny", QWEN_ARCH)


# --------------------------------------------------------------------------------- memory meter
def _proc_status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        match = re.search(rf"^{key}:\s+(\d+)", f.read(), re.MULTILINE)
    return int(match.group(1)) if match else 0


def sync(device: str) -> None:
    """Wait for queued CUDA kernels (so wall clocks read finished work); no-op on CPU."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


class RssPeak:
    """Peak memory above the level at ``start()``.

    RSS (Linux): VmHWM reset via clear_refs, minus VmRSS at start. CUDA (``device="cuda"``):
    ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` at the same moment,
    minus ``memory_allocated`` then (``peak_cuda_mb``), and the absolute peak
    (``cuda_total_mb``, weights included).
    """

    def __init__(self, device: str = "cpu"):
        self.device = device

    def start(self) -> None:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current VmRSS
        self.base_kb = _proc_status_kb("VmRSS")
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.cuda_base = torch.cuda.memory_allocated()

    def peak_mb(self) -> float:
        return (_proc_status_kb("VmHWM") - self.base_kb) / 1024

    def report(self) -> dict[str, float | None]:
        """{peak_rss_mb, peak_cuda_mb, cuda_total_mb} (the CUDA ones None on CPU), in MiB."""
        out: dict[str, float | None] = {
            "peak_rss_mb": self.peak_mb(),
            "peak_cuda_mb": None,
            "cuda_total_mb": None,
        }
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
            out["peak_cuda_mb"] = (peak - self.cuda_base) / 2**20
            out["cuda_total_mb"] = peak / 2**20
        return out


def prompt_digest(prompts: list[str]) -> str:
    """A short hash of one RL step's prompts, in order (12 hex digits)."""
    return hashlib.sha1("\x00".join(prompts).encode()).hexdigest()[:12]


def table_digests(table: dict, prompts_per_step: int) -> list[str]:
    """``prompt_digest`` of each consecutive chunk of P prompts of the table (TRL's steps)."""
    rows = table["prompts"]
    return [
        prompt_digest(rows[i : i + prompts_per_step])
        for i in range(0, len(rows) - prompts_per_step + 1, prompts_per_step)
    ]


# ------------------------------------------------------------------------------------ workload
def setup_workload(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Build (once, shared by both sides) the model folder, the data file and the prompt table.

    The table (``prompts.json``: rendered prompt strings and answers, P·(steps + warmup) rows)
    lists the prompts in exactly the order our trainer draws them (``trainer_prompt_order``);
    TRL reads it front to back (``shuffle_dataset=False``), so both sides sample completions
    for the same P prompts at every RL step.
    """
    from llm.data.tasks import write_tiny_task
    from llm.data.tiny import build_tiny

    model_dir = build_tiny(work / "model", seed=0)
    if args.arch != "tiny" or args.hidden or args.layers:
        _reinit(model_dir, args)
    rows = args.prompts * (args.steps + args.warmup)
    data = write_tiny_task(work / "task.jsonl", n=rows, seed=1)
    pairs = trainer_prompt_order(args, str(model_dir), str(data), work / "order_run", rows)
    table = {"prompts": [p for p, _ in pairs], "answers": [a for _, a in pairs]}
    (work / "prompts.json").write_text(json.dumps(table))
    return {
        "model_dir": str(model_dir),
        "prompts_file": str(work / "prompts.json"),
        "data_file": str(data),
    }


def trainer_prompt_order(
    args: argparse.Namespace, model_dir: str, data_file: str, run_dir: Path, count: int
) -> list[tuple[str, str]]:
    """The first ``count`` (rendered prompt, answer) pairs our trainer draws, in order.

    Uses the trainer's own stages on the config ``run_ours_trainer`` runs with: ``load_data``
    (loading, instruction, length checks) and ``DataStream`` (epoch e = the permutation of
    ``np.random.default_rng([seed, e])``), so the order cannot drift from the trainer's.
    """
    from llm.data.stream import DataStream
    from llm.runstate.setup import RunPaths, load_data

    cfg = ours_config(args, model_dir, data_file)
    paths = RunPaths(run_dir=run_dir, model=Path(model_dir), tokenizer=Path(model_dir),
                     train_data=Path(data_file), eval_data=None, ref_model=None)  # fmt: skip
    tokenizer, data = load_data(cfg, paths)
    return DataStream(data.train, tokenizer, cfg).next(count)


def model_config(args: argparse.Namespace, tiny_config):
    """The Qwen2 config of the benchmarked model (random weights, the tiny tokenizer).

    ``--arch tiny``: ``llm.data.tiny``'s model; ``--hidden h`` makes it h wide (h/64 heads, 1 KV head,
    MLP 2h), ``--layers l`` l deep. ``--arch qwen2.5-1.5b``: Qwen2.5-1.5B's architecture (hidden
    1536, 28 layers, 12 heads, 2 KV heads, MLP 8960, vocab 151,936, tied embeddings, RoPE θ 1e6);
    ``--hidden h`` shrinks it keeping head size 128 (h/128 heads, at least 1; 2 KV heads when the
    head count is even, else 1; MLP 35h/6, Qwen's ratio) and the vocabulary, ``--layers l`` sets
    the depth. Special-token ids stay the tiny tokenizer's; ids beyond its 41 tokens decode to
    nothing (the tokenizer skips unknown ids), so a random 151,936-way model rarely stops early.
    """
    from transformers import Qwen2Config

    kw: dict[str, Any] = {k: getattr(tiny_config, k) for k in ("eos_token_id", "pad_token_id")}
    if args.arch == QWEN_ARCH:
        from bench.bench_logprobs import PRESETS, QWEN_VOCAB

        kw.update(PRESETS[QWEN_ARCH], vocab_size=QWEN_VOCAB, max_position_embeddings=32768)
        if args.hidden:
            heads = max(1, args.hidden // 128)
            kw.update(hidden_size=args.hidden, intermediate_size=round(args.hidden * 35 / 6),
                      num_attention_heads=heads,
                      num_key_value_heads=2 if heads % 2 == 0 else 1)  # fmt: skip
    else:
        keep = ("vocab_size", "hidden_size", "intermediate_size", "num_attention_heads",
                "num_key_value_heads", "max_position_embeddings", "tie_word_embeddings",
                "initializer_range", "rms_norm_eps")  # fmt: skip
        kw.update({k: getattr(tiny_config, k) for k in keep})
        kw["rope_parameters"] = tiny_config.rope_parameters
        kw["num_hidden_layers"] = tiny_config.num_hidden_layers
        if args.hidden:
            kw.update(hidden_size=args.hidden, intermediate_size=2 * args.hidden,
                      num_attention_heads=max(1, args.hidden // 64),
                      num_key_value_heads=1)  # fmt: skip
    if args.layers:
        kw["num_hidden_layers"] = args.layers
    return Qwen2Config(**kw)


def _reinit(model_dir: Path, args: argparse.Namespace) -> None:
    """Re-initialise the model in ``model_dir`` per ``model_config`` (seed 0, same tokenizer),
    saved in the run's dtype (both sides load it in that dtype)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = model_config(args, AutoConfig.from_pretrained(model_dir))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).to(getattr(torch, args.dtype))
    model.save_pretrained(model_dir)


_REWARD = None


def _reward(completions: list[str], answers: list[str]) -> list[float]:
    """The trainer's own ``tiny_task`` reward object (with its timeout guard), for both sides."""
    global _REWARD
    if _REWARD is None:
        import llm.data.tasks  # noqa: F401  (registers tiny_task)
        from llm.rewards.registry import get_reward

        _REWARD = get_reward("tiny_task")
    return list(_REWARD(completions, answers))


# ------------------------------------------------------------------------------------ TRL side
def trl_config_kwargs(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """``GRPOConfig`` keywords for the workload: one generation batch of N = P·G sequences per
    rollout, consumed by K optimizer steps (``num_iterations``), each over all N in micro-batches
    of ``--microbatch-size`` (gradient accumulation; 0: one batch of N)."""
    n = args.prompts * args.group
    micro = args.microbatch_size or n
    accum = n // micro
    return dict(
        output_dir=str(out / "trl"),
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=accum,
        num_generations=args.group,
        steps_per_generation=accum,  # generation batch = micro · accum = N
        num_iterations=args.inner_steps,
        max_completion_length=args.max_new_tokens,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=args.max_grad_norm,
        beta=0.0,
        loss_type="grpo",
        scale_rewards="group",
        max_steps=(args.steps + args.warmup) * args.inner_steps,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=args.device == "cpu",
        bf16=args.dtype == "bfloat16",
        seed=args.seed,
        shuffle_dataset=False,  # the table is already in our trainer's order
        disable_tqdm=True,
        dataloader_num_workers=0,
        log_completions=False,
        gradient_checkpointing=args.gradient_checkpointing,  # TRL's default is True; ours False
    )


def run_trl(args: argparse.Namespace, model_dir: str, table: dict, out: Path) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    rows = args.prompts * (args.steps + args.warmup)
    ds = Dataset.from_dict({"prompt": table["prompts"][:rows], "answer": table["answers"][:rows]})

    def reward_fn(prompts, completions, answer, **kwargs):
        return _reward(completions, answer)

    config = GRPOConfig(**trl_config_kwargs(args, out))
    timings: list[dict[str, float]] = []
    digests: list[str] = []

    class Trainer(GRPOTrainer):
        def _generate_and_score_completions(self, inputs):
            digests.append(prompt_digest([x["prompt"] for x in inputs[:: args.group]]))
            sync(args.device)
            t0, c0 = time.perf_counter(), time.process_time()
            result = super()._generate_and_score_completions(inputs)
            sync(args.device)
            timings[-1]["gen_s"] += time.perf_counter() - t0
            timings[-1]["gen_cpu_s"] += time.process_time() - c0
            return result

    class StepClock(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            sync(args.device)
            timings.append({"gen_s": 0.0, "gen_cpu_s": 0.0})
            timings[-1].update(t0=time.perf_counter(), c0=time.process_time())

        def on_step_end(self, a, state, control, **kw):
            sync(args.device)
            t = timings[-1]
            t["step_s"] = time.perf_counter() - t.pop("t0")
            t["step_cpu_s"] = time.process_time() - t.pop("c0")

    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, args.dtype))
    tok = AutoTokenizer.from_pretrained(model_dir)
    trainer = Trainer(
        model=model,
        reward_funcs=reward_fn,
        args=config,
        train_dataset=ds,
        processing_class=tok,
        callbacks=[StepClock()],
    )
    meter = RssPeak(args.device)
    meter.start()
    trainer.train()
    memory = meter.report()
    lengths = [
        h["completions/mean_length"]
        for h in trainer.state.log_history
        if "completions/mean_length" in h
    ]
    per_rl = _group_rl_steps(timings, args.inner_steps, lengths)
    return {"side": "trl", "per_step": per_rl, "prompt_digests": digests, **memory}


def _group_rl_steps(
    timings: list[dict[str, float]], inner_steps: int, lengths: list[float]
) -> list[dict[str, float]]:
    """TRL's optimizer steps grouped into RL steps of K (generation happens in the first of each):
    per RL step, gen/update wall and CPU seconds and the logged mean completion length."""
    per_rl = []
    for i in range(0, len(timings), inner_steps):
        block = timings[i : i + inner_steps]
        row = {}
        for kind in ("", "_cpu"):
            gen = sum(t[f"gen{kind}_s"] for t in block)
            row[f"gen{kind}_s"] = gen
            row[f"update{kind}_s"] = sum(t[f"step{kind}_s"] for t in block) - gen
        if i // inner_steps < len(lengths):  # logged once per rollout
            row["mean_completion_tokens"] = lengths[i // inner_steps]
        per_rl.append(row)
    return per_rl


# ------------------------------------------------------------------------------ our side
def ours_config(args: argparse.Namespace, model_dir: str, data_file: str):
    """Our trainer's ``TrainConfig`` for the workload (the ``tiny`` preset, overridden)."""
    from llm.config import build as C

    n = args.prompts * args.group
    overrides = {
        "model": model_dir,
        "train_data": data_file,
        "data_schema": "plain",
        "instruction": "none",
        "chat_template": True,
        "reward": "tiny_task",
        "prompts_per_step": args.prompts,
        "group_size": args.group,
        "max_new_tokens": args.max_new_tokens,
        "temperature": 1.0,
        "top_p": 1.0,
        "method": "grpo",
        "minibatch_size": n,
        "microbatch_size": getattr(args, "microbatch_size", 0) or 0,
        "epochs_per_rollout": args.inner_steps,
        "optimizer": "adamw",
        "lr": args.lr,
        "weight_decay": 0.0,
        "max_grad_norm": args.max_grad_norm,
        "beta": 0.0,
        "total_steps": args.steps + args.warmup,
        "eval_data": "",
        "eval_every": 0,
        "samples_every": 0,
        "save_every": 0,
        "tensorboard": False,
        "progress": False,
        "num_threads": args.threads,
        "device": args.device,
        "dtype": args.dtype,
        "seed": args.seed,
        "gradient_checkpointing": args.gradient_checkpointing,
        "reuse_onpolicy_logp": not getattr(args, "no_reuse_logp", False),
        "microbatch_tokens": getattr(args, "microbatch_tokens", 0) or 0,
    }
    return C.build_config(preset="tiny", overrides=[f"{k}={v}" for k, v in overrides.items()])


def _recording(next_prompts, digests: list[str]):
    """``next_prompts`` that also appends the digest of each draw's prompts to ``digests``."""

    def draw(k: int):
        pairs = next_prompts(k)
        digests.append(prompt_digest([p for p, _ in pairs]))
        return pairs

    return draw


def run_ours_trainer(
    args: argparse.Namespace, model_dir: str, table: dict, out: Path
) -> dict[str, Any]:
    """``llm.train.train`` on the same model, data file and workload; its three phases timed.

    The phase functions ``collect`` (sampling + reward), ``sequence_logprobs`` (old log-probs) and
    ``inner_steps`` (the K optimizer steps) are wrapped where ``llm.train`` looks them up, to read
    wall and CPU seconds the same way as on the TRL side; the prompt stream handed to ``collect``
    is wrapped to record which prompts each step drew.
    """
    import llm.train as T

    cfg = ours_config(args, model_dir, args.data_file)
    meter = RssPeak(args.device)
    per_rl: list[dict[str, float]] = []
    digests: list[str] = []

    def clocked(fn, phase: str, new_step: bool = False):
        def wrapper(*a, **kw):
            if new_step:  # collect opens an RL step
                if not per_rl:
                    meter.start()  # after imports, model and data load, as on the TRL side
                per_rl.append(
                    {"gen_s": 0.0, "gen_cpu_s": 0.0, "update_s": 0.0, "update_cpu_s": 0.0}
                )
                if "next_prompts" in kw:
                    kw["next_prompts"] = _recording(kw["next_prompts"], digests)
                else:
                    a = (*a[:2], _recording(a[2], digests), *a[3:])
            sync(args.device)
            t0, c0 = time.perf_counter(), time.process_time()
            result = fn(*a, **kw)
            sync(args.device)
            row = per_rl[-1]
            row[f"{phase}_s"] += time.perf_counter() - t0
            row[f"{phase}_cpu_s"] += time.process_time() - c0
            if new_step:
                row["mean_completion_tokens"] = float(result.lengths.float().mean())
            return result

        return wrapper

    originals = (T.collect, T.sequence_logprobs, T.inner_steps)
    T.collect = clocked(originals[0], "gen", new_step=True)
    T.sequence_logprobs = clocked(originals[1], "gen")
    T.inner_steps = clocked(originals[2], "update")
    run_dir = out / f"ours_run_{Path(args.result).stem}"
    try:
        T.train(cfg, run_dir)
    finally:
        T.collect, T.sequence_logprobs, T.inner_steps = originals
        shutil.rmtree(run_dir, ignore_errors=True)  # its final checkpoint: GBs at 1.5B
    return {"side": "ours", "mode": "trainer", "per_step": per_rl, "prompt_digests": digests,
            **meter.report()}  # fmt: skip


def run_ours_components(
    args: argparse.Namespace, model_dir: str, table: dict, out: Path
) -> dict[str, Any]:
    """The trainer's pipeline from its parts: generate -> reward -> old logp -> K AdamW steps.

    CPU only and no micro-batching (a check on the trainer's overhead at the tiny sizes)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llm.rollout.sampling import generate
    from llm.update.logprobs import token_logprobs
    from ticgrpo import group_advantages, policy_loss

    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, args.dtype))
    tok = AutoTokenizer.from_pretrained(model_dir)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    pad = tok.pad_token_id
    meter = RssPeak()
    meter.start()
    per_rl, digests = [], []
    for step in range(args.steps + args.warmup):
        t0, c0 = time.perf_counter(), time.process_time()
        sl = slice(step * args.prompts, (step + 1) * args.prompts)
        prompts, answers = table["prompts"][sl], table["answers"][sl]
        digests.append(prompt_digest(prompts))
        gen = generate(
            model, tok, prompts, num_samples=args.group, max_new_tokens=args.max_new_tokens,
            seed=args.seed + step,
        )  # fmt: skip
        rewards = torch.tensor(
            _reward(gen.texts, [a for a in answers for _ in range(args.group)]),
            dtype=torch.float32,
        )
        ids, attn, mask = _pack(gen.prompt_ids, gen.completion_ids, pad)
        resp = mask.shape[1]
        with torch.no_grad():
            old = token_logprobs(model, ids, attn, logits_to_keep=resp).logp
        adv = group_advantages(rewards, args.group, mode="std")
        t1, c1 = time.perf_counter(), time.process_time()
        for _ in range(args.inner_steps):
            logp = token_logprobs(model, ids, attn, logits_to_keep=resp).logp
            loss = policy_loss(logp, old, adv, mask, method="grpo").loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            opt.step()
        per_rl.append(
            {
                "gen_s": t1 - t0,
                "update_s": time.perf_counter() - t1,
                "gen_cpu_s": c1 - c0,
                "update_cpu_s": time.process_time() - c1,
                "mean_completion_tokens": statistics.mean(len(c) for c in gen.completion_ids),
            }
        )
    return {
        "side": "ours",
        "mode": "components",
        "per_step": per_rl,
        "prompt_digests": digests,
        **meter.report(),
    }


def _pack(prompt_ids: list[list[int]], completion_ids: list[list[int]], pad: int):
    """Left-padded prompts + right-padded completions -> ids, attention [N, S], response mask [N, T]."""
    import torch

    width_p = max(len(p) for p in prompt_ids)
    width_c = max(1, max(len(c) for c in completion_ids))
    n = len(prompt_ids)
    ids = torch.full((n, width_p + width_c), pad, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for i, (p, c) in enumerate(zip(prompt_ids, completion_ids)):
        ids[i, width_p - len(p) : width_p] = torch.tensor(p)
        attn[i, width_p - len(p) : width_p] = 1
        if c:
            ids[i, width_p : width_p + len(c)] = torch.tensor(c)
            attn[i, width_p : width_p + len(c)] = 1
    return ids, attn, attn[:, width_p:].bool()
