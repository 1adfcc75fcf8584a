"""Evaluation suites: several benchmarks in one call, each with its own decoding (``ticgrpo eval
--suite``).

A suite is a YAML file (or the built-in ``paper``): top-level keys are defaults for every
benchmark, ``benchmarks`` lists them::

    max_new_tokens: 8192
    benchmarks:
      - {name: aime24, data: data/aime24.jsonl, k: 32, temperature: 1.0, top_p: 1.0,
         reward: answer_tag, prompt_format: dapo, paper: aime24}
      - {name: math500, data: data/math500.jsonl, greedy: true, reward: math,
         prompt_format: boxed, paper: math500}

Each benchmark reports avg@k (the paper's Avg@k: mean over problems of the share of k samples
that are correct), its standard error over problems, pass@k (unbiased, Chen et al. 2021), and,
where v5's Table 1 / Table 2 has one for the same model and method, the paper's value beside
ours (``PAPER_TABLE1``, SPEC section 5).

A benchmark's ``kind`` picks the function that scores it (``BENCHMARK_KINDS``). ``sampled`` (the
default) loads a local file with ``llm.data.loaders.load_examples`` (any schema it knows, code
included once that loader reads LiveCodeBench rows), samples with ``llm.rollout``, scores with a
registered reward and counts correct samples per problem. Another kind is one function
``fn(model, tokenizer, bench, ctx) -> BenchmarkRun`` registered with
``register_benchmark_kind(name, fn)``; it only has to return per-problem correct counts out of
``bench.k``; the table, standard errors, pass@k and the paper's value come from here.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: v5 Table 1 (Qwen3-1.7B and Qwen3-8B) and Table 2 (the 1.7B ablations), in percent.
PAPER_TABLE1: dict[tuple[str, str], dict[str, float]] = {
    ("qwen3-1.7b", "grpo"): {"aime24": 9.17, "aime25": 5.31, "math500": 66.6, "livecodebench": 10.67},
    ("qwen3-1.7b", "gspo"): {"aime24": 10.31, "aime25": 6.24, "math500": 69.0, "livecodebench": 11.23},
    ("qwen3-1.7b", "tic_grpo"): {"aime24": 11.77, "aime25": 6.98, "math500": 69.8, "livecodebench": 12.11},
    ("qwen3-1.7b", "grpo_traj_is"): {"aime24": 10.62, "aime25": 6.77, "math500": 68.0, "livecodebench": 11.44},
    ("qwen3-1.7b", "grpo2"): {"aime24": 10.31, "aime25": 6.64, "math500": 67.4, "livecodebench": 11.34},
    ("qwen3-8b", "grpo"): {"aime24": 31.35, "aime25": 22.9, "math500": 88.6, "livecodebench": 19.88},
    ("qwen3-8b", "gspo"): {"aime24": 30.21, "aime25": 22.5, "math500": 88.4, "livecodebench": 20.00},
    ("qwen3-8b", "tic_grpo"): {"aime24": 33.34, "aime25": 24.12, "math500": 90.0, "livecodebench": 21.00},
}  # fmt: skip
PROMPT_FORMATS = ("as_is", "boxed", "dapo")


class SuiteError(ValueError):
    """A suite file or benchmark that cannot be run; the message names the file and field."""


@dataclass(frozen=True)
class Benchmark:
    """One benchmark of a suite and its decoding."""

    name: str
    data: str
    """Local file (.jsonl/.json/.parquet) in a schema the loaders know."""
    kind: str = "sampled"
    """Scoring function (BENCHMARK_KINDS)."""
    k: int = 1
    """Samples per problem: avg@k, pass@k."""
    greedy: bool = False
    """Greedy decoding (then k must be 1); else sampling at temperature / top_p."""
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 8192
    reward: str = "math"
    """Registered reward name (llm.rewards.registry)."""
    schema: str = "auto"
    """Loader schema: auto | dapo | plain | fields (and what other loaders add)."""
    prompt_format: str = "boxed"
    """Plain problems: boxed (append the boxed-answer instruction) | dapo (DAPO's "Answer:"
    template) | as_is. Rows that carry their own chat prompt are kept as given."""
    limit: int = 0
    """Evaluate the first this-many problems; 0 means all."""
    paper: str = ""
    """Column of PAPER_TABLE1 this benchmark reproduces (aime24 | aime25 | math500 |
    livecodebench); empty for none."""
    options: dict = field(default_factory=dict)
    """Kind-specific options, passed through."""

    @property
    def decoding(self) -> str:
        if self.greedy:
            return "greedy"
        return f"T={self.temperature:g}, top-p={self.top_p:g}"


@dataclass
class EvalContext:
    """What every benchmark of one call shares."""

    seed: int = 0
    batch_size: int | None = None
    chat_template: bool = True
    generation: str = "plain"


@dataclass
class BenchmarkRun:
    """A kind's result: per-problem correct counts out of ``k``, extra metrics, per-problem rows."""

    num_correct: list[int]
    k: int
    metrics: dict[str, float] = field(default_factory=dict)
    problems: list[dict] = field(default_factory=list)


BenchmarkFn = Callable[[Any, Any, Benchmark, EvalContext], BenchmarkRun]
BENCHMARK_KINDS: dict[str, BenchmarkFn] = {}


def register_benchmark_kind(name: str, fn: BenchmarkFn) -> BenchmarkFn:
    """Make ``kind: name`` run ``fn(model, tokenizer, bench, ctx) -> BenchmarkRun``."""
    BENCHMARK_KINDS[name] = fn
    return fn


# ----------------------------------------------------------------------------- the suite file

#: The paper's evaluation (SPEC section 5). Paths are defaults for local copies; override them
#: with ``--bench-data NAME=PATH``.
PAPER_SUITE: dict = {
    "max_new_tokens": 8192,
    "benchmarks": [
        {"name": "aime24", "data": "data/aime24.jsonl", "k": 32, "temperature": 1.0,
         "top_p": 1.0, "reward": "answer_tag", "prompt_format": "dapo", "paper": "aime24"},
        {"name": "aime25", "data": "data/aime25.jsonl", "k": 32, "temperature": 1.0,
         "top_p": 1.0, "reward": "answer_tag", "prompt_format": "dapo", "paper": "aime25"},
        {"name": "math500", "data": "data/math500.jsonl", "k": 1, "greedy": True,
         "reward": "math", "prompt_format": "boxed", "paper": "math500"},
        # code: the sandboxed reward (llm/sandbox, needs bubblewrap); --only leaves it out
        {"name": "livecodebench", "data": "data/livecodebench.jsonl", "k": 1, "greedy": True,
         "schema": "code", "reward": "code", "prompt_format": "as_is", "paper": "livecodebench"},
    ],
}  # fmt: skip
SUITES = {"paper": PAPER_SUITE}
_FIELDS = {f.name: f for f in dataclasses.fields(Benchmark)}


def _check_value(where: str, name: str, value):
    """``value`` as field ``name``'s type; SuiteError naming ``where`` and the field."""
    want = {"k": int, "limit": int, "max_new_tokens": int, "temperature": float, "top_p": float,
            "greedy": bool, "options": dict}.get(name, str)  # fmt: skip
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise SuiteError(f"{where}: field {name!r}: expected {want.__name__}, got {value!r}")
    return value


def make_benchmark(raw: dict, defaults: dict, where: str) -> Benchmark:
    """A checked Benchmark from one suite entry (``defaults`` first, the entry wins)."""
    if not isinstance(raw, dict):
        raise SuiteError(f"{where}: expected a mapping, got {type(raw).__name__}")
    values = {**defaults, **raw}
    for key in values:
        if key not in _FIELDS:
            close = difflib.get_close_matches(key, list(_FIELDS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise SuiteError(f"{where}: unknown field {key!r}{hint}")
    for key in ("name", "data"):
        if not values.get(key):
            raise SuiteError(f"{where}: field {key!r} is required")
    values = {k: _check_value(where, k, v) for k, v in values.items()}
    bench = Benchmark(**values)
    problems = []
    if bench.k < 1 or bench.max_new_tokens < 1 or bench.limit < 0:
        problems.append("k and max_new_tokens must be >= 1 and limit >= 0")
    if bench.greedy and bench.k != 1:
        problems.append(f"greedy decoding gives one answer per problem: set k=1 (got k={bench.k})")
    if not bench.greedy and not (bench.temperature > 0 and 0 < bench.top_p <= 1):
        problems.append("sampling needs temperature > 0 and 0 < top_p <= 1 (or greedy: true)")
    if bench.prompt_format not in PROMPT_FORMATS:
        problems.append(f"prompt_format must be one of {PROMPT_FORMATS}")
    if bench.kind not in BENCHMARK_KINDS:
        problems.append(f"kind {bench.kind!r} is not registered; known: {sorted(BENCHMARK_KINDS)}")
    if problems:
        raise SuiteError(f"{where} ({bench.name}): " + "; ".join(problems))
    return bench


def load_suite(
    spec: str | dict,
    *,
    data: dict[str, str] | None = None,
    only: list[str] | None = None,
    overrides: dict | None = None,
) -> list[Benchmark]:
    """The benchmarks of a suite: a built-in name (``SUITES``), a YAML file, or a dict.

    ``data`` replaces benchmarks' files by name, ``only`` keeps the named benchmarks (in suite
    order), ``overrides`` sets fields of every benchmark (e.g. ``limit``). Data files must exist.
    """  # fmt: skip
    where = "suite"
    if isinstance(spec, str) and spec in SUITES:
        raw, where = SUITES[spec], f"suite {spec!r}"
    elif isinstance(spec, str):
        import yaml

        path = Path(spec)
        if not path.is_file():
            raise SuiteError(f"--suite {spec}: not a built-in suite {sorted(SUITES)} nor a file")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise SuiteError(f"{path}: not valid YAML ({e})") from None
        where = str(path)
    else:
        raw = spec
    if not isinstance(raw, dict) or not isinstance(raw.get("benchmarks"), list):
        raise SuiteError(f"{where}: expected a mapping with a 'benchmarks' list")
    defaults = {k: v for k, v in raw.items() if k != "benchmarks"}
    unknown = sorted(k for k in defaults if k not in _FIELDS or k in ("name", "data"))
    if unknown:
        raise SuiteError(f"{where}: top-level key {unknown[0]!r} is not a benchmark default; "
                         f"allowed: {sorted(set(_FIELDS) - {'name', 'data'})}")  # fmt: skip
    defaults.update(overrides or {})
    benches = [make_benchmark(b, defaults, f"{where}: benchmarks[{i}]")
               for i, b in enumerate(raw["benchmarks"])]  # fmt: skip
    names = [b.name for b in benches]
    if len(set(names)) != len(names):
        raise SuiteError(f"{where}: benchmark names repeat: {names}")
    for name in list(data or {}) + list(only or []):
        if name not in names:
            raise SuiteError(f"{where}: no benchmark named {name!r}; it has {names}")
    benches = [dataclasses.replace(b, data=(data or {}).get(b.name, b.data)) for b in benches]
    if only:
        benches = [b for b in benches if b.name in only]
    for b in benches:
        if not Path(b.data).is_file():
            raise SuiteError(
                f"{where}: benchmark {b.name!r}: field 'data': no such file {b.data}"
                f" (point it at a local copy with --bench-data {b.name}=PATH)"
            )
    return benches


# ----------------------------------------------------------------------------- the sampled kind


def greedy_generate(
    model, tokenizer, prompts, *, num_samples, max_new_tokens, seed=None, batch_size=None, **_unused
):
    """Greedy decoding on the rollout's sampling loop (same prompt encoding, EOS and padding);
    ``temperature`` / ``top_p`` do not apply."""  # fmt: skip
    from llm.rollout.sampling import _encode, sample_completions

    encoded = [_encode(tokenizer, p) for p in prompts]
    kwargs = dict(do_sample=False, max_new_tokens=max_new_tokens)
    return sample_completions(model, tokenizer, encoded, num_samples=num_samples, seed=seed,
                              batch_size=batch_size, generate_kwargs=kwargs)  # fmt: skip


def load_benchmark_examples(bench: Benchmark) -> list:
    """The benchmark's problems as ``llm.data.loaders.Example``, in its prompt format."""
    from llm.data.loaders import BOXED_INSTRUCTION, load_examples
    from llm.data.paper_data import dapo_prompt

    instruction = BOXED_INSTRUCTION if bench.prompt_format == "boxed" else None
    examples = load_examples(bench.data, schema=bench.schema, instruction=instruction,
                             limit=bench.limit or None).examples  # fmt: skip
    if bench.prompt_format != "dapo":
        return examples
    out = []
    for ex in examples:
        msgs = ex.messages
        if len(msgs) == 1 and msgs[0]["role"] == "user" and "Answer:" not in msgs[0]["content"]:
            msgs = ({"role": "user", "content": dapo_prompt(msgs[0]["content"])},)
        out.append(dataclasses.replace(ex, messages=msgs))
    return out


def run_sampled(model, tokenizer, bench: Benchmark, ctx: EvalContext) -> BenchmarkRun:
    """Load, generate (greedy or sampled), score with the registered reward."""
    from llm.eval.metrics import evaluate

    examples = load_benchmark_examples(bench)
    out = evaluate(
        model, tokenizer, examples, k=bench.k, max_new_tokens=bench.max_new_tokens,
        temperature=bench.temperature, top_p=bench.top_p, reward=bench.reward, seed=ctx.seed,
        batch_size=ctx.batch_size, chat_template=ctx.chat_template, generation=ctx.generation,
        generate_fn=greedy_generate if bench.greedy else None,
    )  # fmt: skip
    problems = out.pop("problems")
    extra = {k.removeprefix("eval/"): v for k, v in out.items()
             if k in ("eval/mean_length", "eval/truncated_frac", "eval/generate_s")}  # fmt: skip
    return BenchmarkRun([p["num_correct"] for p in problems], bench.k, extra, problems)


register_benchmark_kind("sampled", run_sampled)


# ----------------------------------------------------------------------------- running a suite


def paper_value(model_name: str | None, method: str | None, column: str) -> float | None:
    """v5's reported value (percent) for this model, method and benchmark column, or None."""
    if not (model_name and method and column):
        return None
    key = (Path(model_name.rstrip("/")).name.lower(), method)
    return PAPER_TABLE1.get(key, {}).get(column)


def bench_summary(bench: Benchmark, run: BenchmarkRun, paper: float | None) -> dict:
    """One table row: avg@k ± SE, pass@k (fractions) and the paper's value (percent)."""
    from llm.eval.metrics import summarize

    if run.k != bench.k or not run.num_correct:
        raise SuiteError(
            f"benchmark {bench.name!r}: kind {bench.kind!r} returned k={run.k} "
            f"and {len(run.num_correct)} problems (expected k={bench.k}, > 0)"
        )
    m = summarize(run.num_correct, bench.k)
    k = bench.k
    return {
        "benchmark": bench.name, "data": bench.data, "kind": bench.kind, "k": k,
        "decoding": bench.decoding, "reward": bench.reward,
        "num_problems": len(run.num_correct),
        f"avg@{k}": m[f"eval/avg@{k}"], f"avg@{k}_se": m[f"eval/avg@{k}_se"],
        f"pass@{k}": m[f"eval/pass@{k}"], "paper": paper, "paper_column": bench.paper or None,
        **run.metrics,
    }  # fmt: skip


def run_suite(
    model,
    tokenizer,
    benches: list[Benchmark],
    ctx: EvalContext,
    *,
    model_name: str | None = None,
    method: str | None = None,
) -> dict:
    """Every benchmark in order: ``{"rows": [...], "problems": {name: [...]}}``.

    Benchmark ``i`` samples with seed ``ctx.seed·1009 + i``, so one call is reproducible."""
    rows, problems = [], {}
    for i, bench in enumerate(benches):
        run = BENCHMARK_KINDS[bench.kind](
            model, tokenizer, bench, dataclasses.replace(ctx, seed=ctx.seed * 1009 + i)
        )
        rows.append(bench_summary(bench, run, paper_value(model_name, method, bench.paper)))
        problems[bench.name] = run.problems
    return {"model": model_name, "method": method, "rows": rows, "problems": problems}


def markdown_table(result: dict) -> str:
    """The suite's rows as a markdown table, ours and the paper's in percent."""
    head = f"model: {result.get('model') or '?'}; method (for the paper's column): " \
           f"{result.get('method') or '?'}\n\n"  # fmt: skip
    lines = ["| benchmark | decoding | problems | avg@k (%) | ± SE | pass@k (%) | paper (%) |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in result["rows"]:
        k = r["k"]
        paper = "–" if r["paper"] is None else f"{r['paper']:.2f}"
        lines.append(
            f"| {r['benchmark']} | {r['decoding']} | {r['num_problems']} | avg@{k} "
            f"{100 * r[f'avg@{k}']:.2f} | {100 * r[f'avg@{k}_se']:.2f} | "
            f"pass@{k} {100 * r[f'pass@{k}']:.2f} | {paper} |"
        )
    return head + "\n".join(lines) + "\n"


def write_suite_result(result: dict, out: str | os.PathLike) -> list[Path]:
    """``eval_suite.json`` (rows, no completions), ``eval_suite.md``, ``problems_<name>.json``."""
    import json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, rows in result["problems"].items():
        written.append(_atomic(out / f"problems_{name}.json", json.dumps(rows, indent=1)))
    summary = {k: v for k, v in result.items() if k != "problems"}
    written.append(_atomic(out / "eval_suite.json", json.dumps(summary, indent=1)))
    written.append(_atomic(out / "eval_suite.md", markdown_table(result)))
    return written


def _atomic(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
