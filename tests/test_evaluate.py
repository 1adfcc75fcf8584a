"""Evaluation: pass@k against brute-force enumeration, evaluate()'s arithmetic with a stub
generator, and `ticgrpo eval` end to end on the tiny model."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from fractions import Fraction
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm.evaluate import evaluate, main, pass_at_k, summarize

# --------------------------------------------------------------------------------------------
# pass@k


@pytest.mark.parametrize(
    "n,c,k,expected",
    [
        (1, 0, 1, 0.0),
        (1, 1, 1, 1.0),
        (2, 1, 1, 0.5),
        (2, 1, 2, 1.0),
        (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
        (10, 3, 2, 24 / 45),  # 1 - C(7,2)/C(10,2) = 1 - 21/45
        (5, 0, 3, 0.0),
        (5, 5, 1, 1.0),
        (8, 2, 1, 0.25),
    ],
)
def test_pass_at_k_hand_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-15)


def test_pass_at_k_equals_subset_enumeration():
    """pass@k = fraction of the C(n,k) size-k subsets of the n samples holding a correct one."""
    for n in range(1, 8):
        for c in range(n + 1):
            samples = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(samples, k))
                exact = Fraction(sum(any(s) for s in subsets), len(subsets))
                assert pass_at_k(n, c, k) == pytest.approx(float(exact), abs=1e-14), (n, c, k)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 400).flatmap(
        lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))
    )
)
def test_pass_at_k_matches_exact_binomials_and_is_monotone(nck):
    n, c, k = nck
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    got = pass_at_k(n, c, k)
    assert 0.0 <= got <= 1.0
    assert got == pytest.approx(float(exact), rel=1e-9, abs=1e-12)
    if k < n:
        assert pass_at_k(n, c, k + 1) >= got
    if c < n:
        assert pass_at_k(n, c + 1, k) >= got


@pytest.mark.parametrize("args", [(3, 4, 1), (3, -1, 1), (3, 1, 0), (3, 1, 4), (3, 1.0, 1)])
def test_pass_at_k_rejects_bad_input(args):
    with pytest.raises((ValueError, TypeError), match="pass_at_k"):
        pass_at_k(*args)


def test_summarize_hand_values():
    m = summarize([0, 2, 4], k=4)  # accuracies 0, .5, 1
    assert m["eval/avg@4"] == pytest.approx(0.5)
    assert m["eval/avg@4_se"] == pytest.approx(0.5 / math.sqrt(3))
    assert m["eval/pass@1"] == pytest.approx(m["eval/avg@4"])
    # c=2 of 4: pass@2 = 1 - C(2,2)/C(4,2) = 5/6; pass@3 = 1; c=4: 1; c=0: 0
    assert m["eval/pass@2"] == pytest.approx((0 + 5 / 6 + 1) / 3)
    assert m["eval/pass@3"] == pytest.approx(2 / 3) and m["eval/pass@4"] == pytest.approx(2 / 3)


# --------------------------------------------------------------------------------------------
# evaluate() with a stub generator: the arithmetic alone


@dataclass(frozen=True)
class Ex:
    answer: str
    row: int
    source: str = "mem.jsonl"


def stub_generate(model, tokenizer, prompts, *, num_samples, max_new_tokens, **kw):
    """Problem i's sample j answers str(j) with j+1 tokens; samples of a prompt contiguous."""
    assert kw["seed"] == 3 and kw["temperature"] == 0.7
    texts, ids, trunc = [], [], []
    for p in prompts:
        for j in range(num_samples):
            texts.append(f"{p} -> {j}")
            ids.append(list(range(min(j + 1, max_new_tokens))))
            trunc.append(j + 1 > max_new_tokens)
    return SimpleNamespace(texts=texts, completion_ids=ids, truncated=trunc, prompt_ids=[])


def last_token_reward(completions, answers):
    return [float(c.split()[-1] == a) for c, a in zip(completions, answers)]


def test_evaluate_arithmetic_with_stub_generator():
    # answers "0" and "1" are each hit once in k=4 samples; "9" never
    examples = [Ex("0", 0), Ex("1", 1), Ex("9", 2)]
    out = evaluate(
        None,
        None,
        examples,
        k=4,
        max_new_tokens=3,
        temperature=0.7,
        reward=last_token_reward,
        seed=3,
        generate_fn=stub_generate,
        render_fn=lambda ex, tok, chat_template: f"q{ex.row}",
    )
    assert out["eval/avg@4"] == pytest.approx(2 / 12)
    assert out["eval/pass@1"] == pytest.approx(2 / 12)
    assert out["eval/pass@2"] == pytest.approx(2 * 0.5 / 3)  # c=1 of 4: pass@2 = 1/2
    assert out["eval/pass@4"] == pytest.approx(2 / 3)
    assert out["eval/mean_length"] == pytest.approx((1 + 2 + 3 + 3) / 4)
    assert out["eval/truncated_frac"] == pytest.approx(0.25)
    assert out["eval/mean_reward"] == pytest.approx(2 / 12)
    assert out["eval/num_problems"] == 3
    probs = out["problems"]
    assert [p["num_correct"] for p in probs] == [1, 1, 0]
    assert probs[1]["rewards"] == [0.0, 1.0, 0.0, 0.0]
    assert probs[2]["completions"][0] == "q2 -> 0" and probs[0]["source"] == "mem.jsonl"
    json.dumps(out)  # results are plain JSON


def test_evaluate_counts_nonfinite_rewards_as_wrong_and_checks_lengths():
    kw = dict(
        k=2,
        max_new_tokens=5,
        temperature=0.7,
        seed=3,
        generate_fn=stub_generate,
        render_fn=lambda ex, tok, chat_template: "q",
    )
    out = evaluate(None, None, [Ex("0", 0)], reward=lambda c, a: [float("nan"), 1.0], **kw)
    assert out["eval/nonfinite_rewards"] == 1 and out["eval/avg@2"] == 0.5
    with pytest.raises(ValueError, match="reward returned 1"):
        evaluate(None, None, [Ex("0", 0)], reward=lambda c, a: [1.0], **kw)
    with pytest.raises(ValueError, match="no examples"):
        evaluate(None, None, [], reward=last_token_reward, **kw)


# --------------------------------------------------------------------------------------------
# end to end: the tiny model, the real generate / data / reward modules, `ticgrpo eval`


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from llm.data.tiny import build_tiny, write_tiny_task

    root = tmp_path_factory.mktemp("tiny")
    from llm.rewards.registry import available_rewards, register_reward

    if "test_has_digit" not in available_rewards():
        register_reward("test_has_digit")(has_digit)
    build_tiny(root / "model", seed=0)
    build_tiny(root / "model_seed1", seed=1)
    write_tiny_task(root / "task.jsonl", 6, seed=0)
    return root


def has_digit(completions, answers):
    """A reward a random tiny model earns about half the time, so the counts are not all 0."""
    return [float(any(ch.isdigit() for ch in c)) for c in completions]


def run_eval(tiny, out, *extra):
    argv = ["--model", str(tiny / "model"), "--data", str(tiny / "task.jsonl"), "--k", "4"]
    argv += [
        "--max-new-tokens",
        "3",
        "--reward",
        "test_has_digit",
        "--seed",
        "1",
        "--out",
        str(out),
    ]
    assert main(argv + list(extra)) == 0
    return json.loads((out / "eval_results.json").read_text())


def test_eval_cli_end_to_end(tiny, tmp_path):
    res = run_eval(tiny, tmp_path / "a")
    m, probs = res["metrics"], res["problems"]
    assert 0 < m["eval/avg@4"] < m["eval/pass@2"] < m["eval/pass@3"]  # mixed: the checks bite
    assert len(probs) == 6 and m["eval/num_problems"] == 6
    for p in probs:  # counts agree with an independent re-scoring of the saved completions
        assert len(p["completions"]) == 4 and all(1 <= n <= 3 for n in p["lengths"])
        assert p["rewards"] == has_digit(p["completions"], None)
        assert p["num_correct"] == sum(r >= 0.5 for r in p["rewards"])
    assert m["eval/avg@4"] == pytest.approx(sum(p["num_correct"] for p in probs) / 24)
    assert m["eval/pass@1"] == pytest.approx(m["eval/avg@4"])
    pass4 = sum(p["num_correct"] > 0 for p in probs) / 6
    assert m["eval/pass@4"] == pytest.approx(pass4)
    assert run_eval(tiny, tmp_path / "b")["problems"] == probs  # the seed fixes the samples


def test_eval_static_generation_path_gives_the_same_samples(tiny, tmp_path):
    """--generation static (static KV cache) draws the same samples as the reference path on the
    tiny model under one seed (tests/test_generation_fast.py holds the sampler itself)."""
    import llm.rollout.static_cache as F

    calls = []
    real = F.generate_fast
    F.generate_fast = lambda *a, **k: calls.append(k) or real(*a, **k)
    try:
        fast = run_eval(tiny, tmp_path / "fast", "--generation", "static", "--batch-size", "8")
    finally:
        F.generate_fast = real
    assert len(calls) == 1 and calls[0]["batch_size"] == 8
    plain = run_eval(tiny, tmp_path / "plain", "--batch-size", "8")
    assert fast["problems"] == plain["problems"]
    assert fast["metrics"]["eval/avg@4"] == plain["metrics"]["eval/avg@4"]
    with pytest.raises(ValueError, match="generation must be one of"):
        evaluate(None, None, [object()], k=1, max_new_tokens=1, generation="vllm")


def test_eval_checkpoint_weights_replace_model(tiny, tmp_path):
    """--model seed0 --checkpoint (weights of seed1) evaluates exactly like --model seed1."""
    from transformers import AutoModelForCausalLM

    from llm.runstate.checkpoint import save_checkpoint

    seed1 = AutoModelForCausalLM.from_pretrained(tiny / "model_seed1")
    save_checkpoint(tmp_path / "run", 5, model=seed1, optimizer=None, trainer_state={})
    via_ckpt = run_eval(tiny, tmp_path / "a", "--checkpoint", str(tmp_path / "run"))
    argv = ["--model", str(tiny / "model_seed1"), "--data", str(tiny / "task.jsonl"), "--k", "4"]
    argv += ["--max-new-tokens", "3", "--reward", "test_has_digit", "--seed", "1"]
    argv += ["--out", str(tmp_path / "b")]
    assert main(argv) == 0
    direct = json.loads((tmp_path / "b" / "eval_results.json").read_text())
    assert via_ckpt["problems"] == direct["problems"]
    assert via_ckpt["problems"] != run_eval(tiny, tmp_path / "c")["problems"]


def test_eval_cli_rejects_bad_arguments(tiny, tmp_path, capsys):
    base = ["--data", str(tiny / "task.jsonl")]
    assert main(["--model", str(tmp_path)] + base) == 2
    assert "no config.json" in capsys.readouterr().err
    assert main(["--model", str(tiny / "model"), "--data", str(tmp_path / "x.jsonl")]) == 2
    assert "x.jsonl: no such file" in capsys.readouterr().err
    assert main(["--model", str(tiny / "model"), "--k", "0"] + base) == 2
    assert "--k" in capsys.readouterr().err
    assert main(["--model", str(tiny / "model"), "--reward", "no_such_reward"] + base) == 2
    assert "no_such_reward" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# suites: several benchmarks in one call, each with its own decoding


def write_suite(path, tiny, **extra_b):
    import yaml

    suite = {
        "max_new_tokens": 3,
        "reward": "test_has_digit",
        "benchmarks": [
            {"name": "sampled", "data": str(tiny / "task.jsonl"), "k": 4, "temperature": 1.0,
             "top_p": 1.0, "paper": "aime24"},
            {"name": "greedy", "data": str(tiny / "task.jsonl"), "greedy": True,
             "paper": "math500", **extra_b},
        ],
    }  # fmt: skip
    path.write_text(yaml.safe_dump(suite))
    return path


def run_suite_cli(tiny, out, suite, *extra):
    argv = ["--model", str(tiny / "model"), "--suite", str(suite), "--seed", "3"]
    assert main(argv + ["--out", str(out), *extra]) == 0
    return json.loads((out / "eval_suite.json").read_text())


def test_suite_runs_each_benchmark_with_its_own_decoding(tiny, tmp_path):
    suite = write_suite(tmp_path / "suite.yaml", tiny)
    res = run_suite_cli(tiny, tmp_path / "a", suite, "--paper-model", "Qwen3-1.7B",
                        "--paper-method", "tic_grpo")  # fmt: skip
    sampled, greedy = res["rows"]
    assert (sampled["k"], sampled["decoding"]) == (4, "T=1, top-p=1")
    assert (greedy["k"], greedy["decoding"]) == (1, "greedy")
    for row in res["rows"]:  # the row is recomputed from the saved per-problem completions
        probs = json.loads((tmp_path / "a" / f"problems_{row['benchmark']}.json").read_text())
        k = row["k"]
        counts = [sum(has_digit(p["completions"], None)) for p in probs]
        acc = [c / k for c in counts]
        mean = sum(acc) / len(acc)
        se = math.sqrt(sum((a - mean) ** 2 for a in acc) / (len(acc) - 1) / len(acc))
        assert row[f"avg@{k}"] == pytest.approx(mean) and row[f"avg@{k}_se"] == pytest.approx(se)
        assert row[f"pass@{k}"] == pytest.approx(sum(c > 0 for c in counts) / len(counts))
        assert row["num_problems"] == 6 and all(len(p["completions"]) == k for p in probs)
    assert 0 < sampled["avg@4"] < sampled["pass@4"]  # mixed counts: the checks bite
    # the paper's v5 Table 1 values for Qwen3-1.7B / TIC-GRPO sit beside ours
    assert (sampled["paper"], greedy["paper"]) == (11.77, 69.8)
    md = (tmp_path / "a" / "eval_suite.md").read_text()
    assert "| sampled | T=1, top-p=1 | 6 | avg@4" in md and "| 11.77 |" in md
    # greedy decoding is the argmax path: the seed does not change it; sampling's does
    other = run_suite_cli(tiny, tmp_path / "b", suite, "--seed", "4")
    greedy_probs = [json.loads((tmp_path / d / "problems_greedy.json").read_text())
                    for d in ("a", "b")]  # fmt: skip
    assert greedy_probs[0] == greedy_probs[1]
    assert other["rows"][0]["paper"] is None  # no model/method given: no paper column


def test_greedy_equals_argmax_decoding(tiny):
    """greedy_generate's completions are the step-by-step argmax of the model's logits."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llm.eval.suite import greedy_generate

    model = AutoModelForCausalLM.from_pretrained(tiny / "model")
    tok = AutoTokenizer.from_pretrained(tiny / "model")
    prompt = "repeat 7"
    gen = greedy_generate(model, tok, [prompt], num_samples=1, max_new_tokens=3, seed=0)
    ids = tok(prompt)["input_ids"]
    eos = tok.eos_token_id
    out = []
    with torch.no_grad():
        for _ in range(3):
            nxt = int(model(torch.tensor([ids + out])).logits[0, -1].argmax())
            out.append(nxt)
            if nxt == eos:
                break
    assert gen.completion_ids[0] == out


def test_suite_errors_name_the_file_row_and_field(tiny, tmp_path, capsys):
    from llm.eval.suite import SuiteError, load_suite

    suite = write_suite(tmp_path / "s.yaml", tiny, temprature=0.5)
    with pytest.raises(SuiteError, match=r"s.yaml: benchmarks\[1\]: unknown field 'temprature'; "
                       "did you mean 'temperature'"):  # fmt: skip
        load_suite(str(suite))
    suite = write_suite(tmp_path / "s.yaml", tiny, k=4)
    with pytest.raises(SuiteError, match=r"benchmarks\[1\] \(greedy\): greedy decoding .* k=1"):
        load_suite(str(suite))
    suite = write_suite(tmp_path / "s.yaml", tiny, k="four")
    with pytest.raises(SuiteError, match=r"field 'k': expected int, got 'four'"):
        load_suite(str(suite))
    with pytest.raises(SuiteError, match=r"'aime24': field 'data': no such file .*--bench-data"):
        load_suite("paper", only=["aime24"])
    with pytest.raises(SuiteError, match=r"no benchmark named 'aime26'"):
        load_suite("paper", data={"aime26": "x.jsonl"})
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "1+1", "answer": "2"}\n{"problem": "2+2"}\n')
    suite = write_suite(tmp_path / "s.yaml", tiny)
    argv = ["--model", str(tiny / "model"), "--suite", str(suite), "--bench-data",
            f"greedy={bad}"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl" in err and "row 1" in err and "'answer'" in err
    assert main(argv[:2] + ["--data", str(bad), "--suite", "paper"]) == 2
    assert "exactly one of --data" in capsys.readouterr().err
    assert main(argv[:4] + ["--k", "4", "--reward", "math"]) == 2  # per-file flags are per bench
    assert "--k, --reward apply to --data" in capsys.readouterr().err
    assert main(argv[:4] + ["--bench-data", "greedy"]) == 2
    assert "--bench-data expects NAME=PATH" in capsys.readouterr().err
    suite.write_text("temprature: 1\nbenchmarks: []\n")
    with pytest.raises(SuiteError, match="top-level key 'temprature' is not a benchmark default"):
        load_suite(str(suite))


def test_a_new_benchmark_kind_is_one_registered_function(tiny, tmp_path):
    """How a code benchmark plugs in: a function returning per-problem correct counts; the
    table, standard error, pass@k and the paper's column come from the suite."""
    from llm.eval.suite import (
        BENCHMARK_KINDS,
        BenchmarkRun,
        EvalContext,
        load_suite,
        register_benchmark_kind,
        run_suite,
    )  # fmt: skip

    seen = []

    def fake_code(model, tokenizer, bench, ctx):
        seen.append((bench.name, bench.options, ctx.seed))
        return BenchmarkRun([1, 0, 1, 1], bench.k, {"mean_length": 7.0})

    register_benchmark_kind("fake_code", fake_code)
    try:
        spec = {"benchmarks": [{"name": "lcb", "data": str(tiny / "task.jsonl"),
                                "kind": "fake_code", "greedy": True, "paper": "livecodebench",
                                "options": {"release": "v5"}}]}  # fmt: skip
        res = run_suite(None, None, load_suite(spec), EvalContext(seed=2),
                        model_name="/models/Qwen3-8B/", method="tic_grpo")  # fmt: skip
    finally:
        del BENCHMARK_KINDS["fake_code"]
    (row,) = res["rows"]
    assert seen == [("lcb", {"release": "v5"}, 2 * 1009)]
    assert row["avg@1"] == 0.75 and row["pass@1"] == 0.75
    assert row["avg@1_se"] == pytest.approx(math.sqrt(0.25 / 4))  # sample var 1/4, 4 problems
    assert row["paper"] == 21.00 and row["mean_length"] == 7.0


def test_paper_suite_has_v5_four_benchmarks_with_their_decoding(tmp_path):
    """v5's evaluation (SPEC §5): AIME24/25 Avg@32 at temperature 1, top-p 1; MATH500 and
    LiveCodeBench greedy Avg@1 (LiveCodeBench through the code schema and the sandboxed reward)."""
    from llm.eval.suite import load_suite

    files = {}
    for name in ("aime24", "aime25", "math500"):
        files[name] = tmp_path / f"{name}.jsonl"
        files[name].write_text('{"problem": "1+1", "answer": "2"}\n')
    files["livecodebench"] = tmp_path / "lcb.jsonl"
    files["livecodebench"].write_text("{}\n")  # rows are read when the suite runs
    data = {k: str(v) for k, v in files.items()}
    got = {b.name: (b.k, b.greedy, b.temperature, b.top_p, b.reward, b.paper)
           for b in load_suite("paper", data=data)}  # fmt: skip
    assert got["aime24"][:4] == got["aime25"][:4] == (32, False, 1.0, 1.0)
    assert got["math500"][:2] == got["livecodebench"][:2] == (1, True)
    assert got["livecodebench"][4:] == ("code", "livecodebench")
    kept = load_suite("paper", data=data, only=["aime24", "math500"])
    assert [b.name for b in kept] == ["aime24", "math500"]
