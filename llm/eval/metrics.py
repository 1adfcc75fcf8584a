"""Accuracy averaged over k samples (avg@k) and the unbiased pass@k estimator.

For each of P problems draw k completions, score them with a reward callable, count the correct
ones c_i (reward >= `correct_threshold`) and report

    eval/avg@k   = (1/P) Σ_i c_i / k                      (the paper's "average accuracy")
    eval/pass@j  = (1/P) Σ_i pass_at_k(k, c_i, j)  for j = 1..k   (Chen et al. 2021)

pass@1 equals avg@k exactly. `evaluate_on_ranks` splits the problems over the ranks of a
communicator (the trainer's evaluation; a plain run is a world of one). `ticgrpo eval`
(`llm/evaluate.py`) runs `evaluate` on one file, or runs a suite of benchmarks (`llm.eval.suite`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from llm.config.checks import GENERATIONS  # the sampling paths, one list for train and eval

if TYPE_CHECKING:
    from llm.parallel.comm import Comm


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k).

    Computed as the product 1 - Π_{i=n-c+1}^{n} (1 - k/i), which never forms the (huge)
    binomials; exactly 1 when fewer than k samples are wrong.
    """
    for name, v in (("n", n), ("c", c), ("k", k)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"pass_at_k: {name} must be an int, got {v!r}")
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def summarize(correct: Sequence[int], k: int) -> dict[str, float]:
    """Metrics from per-problem correct counts c_i (each out of k): avg@k, its standard error
    over problems, and pass@j for j = 1..k."""
    if not correct:
        raise ValueError("no problems to summarise")
    p = len(correct)
    acc = [c / k for c in correct]
    mean = sum(acc) / p
    var = sum((a - mean) ** 2 for a in acc) / (p - 1) if p > 1 else 0.0
    out = {f"eval/avg@{k}": mean, f"eval/avg@{k}_se": math.sqrt(var / p)}
    for j in range(1, k + 1):
        out[f"eval/pass@{j}"] = sum(pass_at_k(k, c, j) for c in correct) / p
    return out


def _sampler(generation: str) -> Callable:
    """The sampling function of a ``generation`` path: ``plain``
    (``llm.rollout.sampling.generate``, the reference) or ``static``
    (``llm.rollout.static_cache.generate_fast``: static KV cache, decode step compiled on CUDA,
    batch size from free memory when none is given)."""
    if generation not in GENERATIONS:
        raise ValueError(f"generation must be one of {list(GENERATIONS)}, got {generation!r}")
    if generation == "static":
        from llm.rollout.static_cache import generate_fast

        return generate_fast
    from llm.rollout.sampling import generate

    return generate


def _default_render(example, tokenizer, *, chat_template: bool = True) -> str:
    from llm.data.loaders import render_prompt

    return render_prompt(example, tokenizer, chat_template=chat_template)


def resolve_reward(reward: str | Callable) -> Callable[[list[str], list[str]], list[float]]:
    if callable(reward):
        return reward
    from llm.rewards.registry import get_reward

    return get_reward(reward)


def evaluate(
    model,
    tokenizer,
    examples: Sequence,
    *,
    k: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    reward: str | Callable[[list[str], list[str]], list[float]] = "math",
    seed: int | None = 0,
    batch_size: int | None = None,
    chat_template: bool = True,
    correct_threshold: float = 0.5,
    generate_fn: Callable | None = None,
    render_fn: Callable | None = None,
    generation: str = "plain",
) -> dict[str, Any]:
    """Sample k completions per example and score them.

    Returns a flat dict: `eval/avg@k`, `eval/avg@k_se`, `eval/pass@1..k`, `eval/mean_reward`,
    `eval/mean_length` (completion tokens), `eval/truncated_frac`, `eval/num_problems`,
    `eval/generate_s` (all floats, ready for `RunLogger.log`) and `problems`: one dict per
    example (row, source, answer, num_correct, rewards, lengths, truncated, completions), which
    a logger should not receive. `generation` picks the sampling path (`plain` or `static`, as
    in training); `generate_fn` / `render_fn` replace it / `llm.data.loaders.render_prompt` (tests).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not examples:
        raise ValueError("evaluate: no examples")
    generate_fn = generate_fn or _sampler(generation)
    render_fn = render_fn or _default_render
    reward_fn = resolve_reward(reward)

    prompts = [render_fn(ex, tokenizer, chat_template=chat_template) for ex in examples]
    t0 = time.perf_counter()
    gen = generate_fn(
        model,
        tokenizer,
        prompts,
        num_samples=k,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        batch_size=batch_size,
    )
    gen_s = time.perf_counter() - t0
    n = len(examples) * k
    if len(gen.texts) != n or len(gen.completion_ids) != n:
        raise ValueError(f"generate returned {len(gen.texts)} completions, expected {n}")
    answers = [str(ex.answer) for ex in examples for _ in range(k)]  # [N], samples contiguous
    rewards = [float(r) for r in reward_fn(list(gen.texts), answers)]
    if len(rewards) != n:
        raise ValueError(f"reward returned {len(rewards)} values for {n} completions")
    bad = sum(not math.isfinite(r) for r in rewards)
    rewards = [r if math.isfinite(r) else 0.0 for r in rewards]  # a broken score counts as wrong
    lengths = [len(ids) for ids in gen.completion_ids]

    problems = []
    for i, ex in enumerate(examples):
        sl = slice(i * k, (i + 1) * k)
        problems.append(
            {
                "row": getattr(ex, "row", i),
                "source": str(getattr(ex, "source", "")),
                "answer": str(ex.answer),
                "num_correct": sum(r >= correct_threshold for r in rewards[sl]),
                "rewards": rewards[sl],
                "lengths": lengths[sl],
                "truncated": [bool(t) for t in gen.truncated[sl]],
                "completions": list(gen.texts[sl]),
            }
        )
    metrics: dict[str, Any] = summarize([p["num_correct"] for p in problems], k)
    metrics.update(
        {
            "eval/mean_reward": sum(rewards) / n,
            "eval/mean_length": sum(lengths) / n,
            "eval/truncated_frac": sum(map(bool, gen.truncated)) / n,
            "eval/num_problems": len(examples),
            "eval/nonfinite_rewards": bad,
            "eval/generate_s": gen_s,
        }
    )
    metrics["problems"] = problems
    return metrics


def _block(n: int, rank: int, world_size: int) -> slice:
    """Rank ``rank``'s contiguous block of ``n`` items; the first ``n mod W`` ranks get one more."""
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def evaluate_on_ranks(
    comm: Comm, model, tokenizer, examples: Sequence, *, seed: int, **kwargs
) -> dict[str, float]:
    """``evaluate`` with the problems split into contiguous blocks over the ranks of ``comm``
    (``llm.parallel.comm``), then the same metrics recomputed from every rank's per-problem
    results (identical on all ranks; no ``problems`` entry). In a world of one the block is every
    problem and the metrics are ``evaluate``'s. ``kwargs`` are evaluate's (k, max_new_tokens,
    temperature, top_p, reward, ...)."""
    from llm.parallel.fsdp import unsharded  # torch loads only once a model is evaluated

    mine = examples[_block(len(examples), comm.rank, comm.world_size)]
    out: dict = {"problems": [], "eval/nonfinite_rewards": 0, "eval/generate_s": 0.0}
    with unsharded(model):
        if mine:
            out = evaluate(model, tokenizer, mine, seed=comm.seed(seed), **kwargs)
    fields = ("num_correct", "rewards", "lengths", "truncated")
    problems = comm.gather([{f: p[f] for f in fields} for p in out["problems"]])
    timing = comm.gather([out["eval/generate_s"]])
    bad = sum(comm.gather([out["eval/nonfinite_rewards"]]))
    k = kwargs["k"]
    n = len(problems) * k
    metrics = summarize([p["num_correct"] for p in problems], k)
    metrics.update({
        "eval/mean_reward": sum(r for p in problems for r in p["rewards"]) / n,
        "eval/mean_length": sum(x for p in problems for x in p["lengths"]) / n,
        "eval/truncated_frac": sum(t for p in problems for t in p["truncated"]) / n,
        "eval/num_problems": len(problems),
        "eval/nonfinite_rewards": bad,
        "eval/generate_s": max(timing),
    })  # fmt: skip
    return metrics
