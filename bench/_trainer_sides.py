"""The two sides of bench/bench_trainer_vs_trl.py: the shared workload, TRL's GRPOTrainer, ours.

Each ``run_*`` returns ``{"side", "per_step": [{gen_s, update_s, gen_cpu_s, update_cpu_s,
mean_completion_tokens}], "peak_rss_mb"}`` for one process; the driver aggregates them.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from pathlib import Path
from typing import Any


# --------------------------------------------------------------------------------- memory meter
def _proc_status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        match = re.search(rf"^{key}:\s+(\d+)", f.read(), re.MULTILINE)
    return int(match.group(1)) if match else 0


class RssPeak:
    """Peak resident set above the level at ``start()`` (Linux: VmHWM reset via clear_refs)."""

    def start(self) -> None:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current VmRSS
        self.base_kb = _proc_status_kb("VmRSS")

    def peak_mb(self) -> float:
        return (_proc_status_kb("VmHWM") - self.base_kb) / 1024


# ------------------------------------------------------------------------------------ workload
def setup_workload(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Build (once, shared by both sides) the model folder and the prompt/answer table."""
    from llm.tasks import write_tiny_task
    from llm.tiny import build_tiny

    model_dir = build_tiny(work / "model", seed=0)
    if args.hidden or args.layers:
        _rescale(model_dir, args.hidden, args.layers)
    data = write_tiny_task(work / "task.jsonl", n=args.prompts * (args.steps + args.warmup), seed=1)
    from transformers import AutoTokenizer

    from llm.data import load_examples, render_prompt

    tok = AutoTokenizer.from_pretrained(model_dir)
    # the strings our trainer renders (chat template, no extra instruction), given to both sides
    examples = load_examples(data, schema="plain", instruction=None).examples
    prompts = [render_prompt(ex, tok, chat_template=True) for ex in examples]
    table = {"prompts": prompts, "answers": [str(ex.answer) for ex in examples]}
    (work / "prompts.json").write_text(json.dumps(table))
    return {
        "model_dir": str(model_dir),
        "prompts_file": str(work / "prompts.json"),
        "data_file": str(data),
    }


def _rescale(model_dir: Path, hidden: int | None, layers: int | None) -> None:
    """Re-initialise the tiny model wider/deeper (same tokenizer) for a more compute-bound run."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(model_dir)
    if hidden:
        cfg.hidden_size, cfg.intermediate_size = hidden, 2 * hidden
        cfg.num_attention_heads, cfg.num_key_value_heads = max(1, hidden // 64), 1
    if layers:
        cfg.num_hidden_layers = layers
        if getattr(cfg, "layer_types", None):
            cfg.layer_types = [cfg.layer_types[0]] * layers
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(model_dir)


_REWARD = None


def _reward(completions: list[str], answers: list[str]) -> list[float]:
    """The trainer's own ``tiny_task`` reward object (with its timeout guard), for both sides."""
    global _REWARD
    if _REWARD is None:
        import llm.tasks  # noqa: F401  (registers tiny_task)
        from llm.rewards import get_reward

        _REWARD = get_reward("tiny_task")
    return list(_REWARD(completions, answers))


# ------------------------------------------------------------------------------------ TRL side
def run_trl(args: argparse.Namespace, model_dir: str, table: dict, out: Path) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    n = args.prompts * args.group
    steps = args.steps + args.warmup
    ds = Dataset.from_dict(
        {
            "prompt": table["prompts"][: args.prompts * steps],
            "answer": table["answers"][: len(table["prompts"][: args.prompts * steps])],
        }
    )

    def reward_fn(prompts, completions, answer, **kwargs):
        return _reward(completions, answer)

    config = GRPOConfig(
        output_dir=str(out / "trl"),
        per_device_train_batch_size=n,
        gradient_accumulation_steps=1,
        num_generations=args.group,
        steps_per_generation=1,
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
        max_steps=steps * args.inner_steps,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        seed=args.seed,
        shuffle_dataset=False,
        disable_tqdm=True,
        dataloader_num_workers=0,
        log_completions=False,
        gradient_checkpointing=args.gradient_checkpointing,  # TRL's default is True; ours False
    )
    timings: list[dict[str, float]] = []

    class Trainer(GRPOTrainer):
        def _generate_and_score_completions(self, inputs):
            t0, c0 = time.perf_counter(), time.process_time()
            result = super()._generate_and_score_completions(inputs)
            timings[-1]["gen_s"] += time.perf_counter() - t0
            timings[-1]["gen_cpu_s"] += time.process_time() - c0
            return result

    class StepClock(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            timings.append({"gen_s": 0.0, "gen_cpu_s": 0.0})
            timings[-1].update(t0=time.perf_counter(), c0=time.process_time())

        def on_step_end(self, a, state, control, **kw):
            t = timings[-1]
            t["step_s"] = time.perf_counter() - t.pop("t0")
            t["step_cpu_s"] = time.process_time() - t.pop("c0")

    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(model_dir)
    trainer = Trainer(
        model=model,
        reward_funcs=reward_fn,
        args=config,
        train_dataset=ds,
        processing_class=tok,
        callbacks=[StepClock()],
    )
    meter = RssPeak()
    meter.start()
    trainer.train()
    peak = meter.peak_mb()
    lengths = [
        h["completions/mean_length"]
        for h in trainer.state.log_history
        if "completions/mean_length" in h
    ]
    # group the optimizer steps into RL steps of K: generation happens in the first of each
    per_rl = []
    for i in range(0, len(timings), args.inner_steps):
        block = timings[i : i + args.inner_steps]
        row = {}
        for kind in ("", "_cpu"):
            gen = sum(t[f"gen{kind}_s"] for t in block)
            row[f"gen{kind}_s"] = gen
            row[f"update{kind}_s"] = sum(t[f"step{kind}_s"] for t in block) - gen
        if i // args.inner_steps < len(lengths):  # logged once per rollout
            row["mean_completion_tokens"] = lengths[i // args.inner_steps]
        per_rl.append(row)
    return {"side": "trl", "per_step": per_rl, "peak_rss_mb": peak}


# ------------------------------------------------------------------------------ our side


def run_ours_trainer(
    args: argparse.Namespace, model_dir: str, table: dict, out: Path
) -> dict[str, Any]:
    """``llm.train.train`` on the same model, data file and workload; its three phases timed.

    The phase functions ``collect`` (sampling + reward), ``sequence_logprobs`` (old log-probs) and
    ``inner_steps`` (the K optimizer steps) are wrapped where ``llm.train`` looks them up, to read
    wall and CPU seconds the same way as on the TRL side.
    """
    import llm.train as T
    from llm import config as C

    n = args.prompts * args.group
    overrides = {
        "model": model_dir,
        "train_data": args.data_file,
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
        "device": "cpu",
        "dtype": "float32",
        "seed": args.seed,
        "gradient_checkpointing": args.gradient_checkpointing,
        "reuse_onpolicy_logp": not getattr(args, "no_reuse_logp", False),
        "microbatch_tokens": getattr(args, "microbatch_tokens", 0) or 0,
    }
    cfg = C.build_config(preset="tiny", overrides=[f"{k}={v}" for k, v in overrides.items()])
    meter = RssPeak()
    per_rl: list[dict[str, float]] = []

    def clocked(fn, phase: str, new_step: bool = False):
        def wrapper(*a, **kw):
            if new_step:  # collect opens an RL step
                if not per_rl:
                    meter.start()  # after imports, model and data load, as on the TRL side
                per_rl.append(
                    {"gen_s": 0.0, "gen_cpu_s": 0.0, "update_s": 0.0, "update_cpu_s": 0.0}
                )
            t0, c0 = time.perf_counter(), time.process_time()
            result = fn(*a, **kw)
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
    try:
        T.train(cfg, out / f"ours_run_{Path(args.result).stem}")
    finally:
        T.collect, T.sequence_logprobs, T.inner_steps = originals
    return {"side": "ours", "mode": "trainer", "per_step": per_rl, "peak_rss_mb": meter.peak_mb()}


def run_ours_components(
    args: argparse.Namespace, model_dir: str, table: dict, out: Path
) -> dict[str, Any]:
    """The trainer's pipeline from its parts: generate -> reward -> old logp -> K AdamW steps."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llm.logprobs import token_logprobs
    from llm.rollout import generate
    from ticgrpo import group_advantages, policy_loss

    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(model_dir)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    pad = tok.pad_token_id
    meter = RssPeak()
    meter.start()
    per_rl = []
    for step in range(args.steps + args.warmup):
        t0, c0 = time.perf_counter(), time.process_time()
        sl = slice(step * args.prompts, (step + 1) * args.prompts)
        prompts, answers = table["prompts"][sl], table["answers"][sl]
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
        "peak_rss_mb": meter.peak_mb(),
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
