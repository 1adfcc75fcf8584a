"""Length-aware micro-batching (``microbatch_tokens``): less padding, the same gradient.

Rows are sorted by length and cut under a padded-token budget; the loss keeps the mini-batch's
global normalisers, so the accumulated gradient is the same sum of per-row terms. Held to the
fixed-row path on a float64 tiny Qwen2 (weights after the inner steps, logged metrics), plus
properties of the split itself.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llm.config import build as C
from llm.rollout.experience import Experience
from llm.rollout.sampling import Generation
from llm.update.batching import collate, microbatches, sequence_logprobs
from llm.update.inner_steps import inner_steps
from tests.test_llm_train import tiny_cfg

VOCAB, P, G = 48, 3, 4
N = P * G


def _experience(prompt_lens: list[int], comp_lens: list[int], seed: int = 0) -> Experience:
    """A hand-made rollout with the given prompt (per group) and completion lengths."""
    gen = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(3, VOCAB, (n,), generator=gen).tolist() for n in prompt_lens]
    g = len(comp_lens) // len(prompt_lens)
    return Experience(
        prompts=[f"p{i}" for i in range(len(prompt_lens))],
        answers=[""] * len(comp_lens),
        gen=Generation(
            prompt_ids=[prompts[i // g] for i in range(len(comp_lens))],
            completion_ids=[
                torch.randint(3, VOCAB, (n,), generator=gen).tolist() for n in comp_lens
            ],
            texts=[""] * len(comp_lens),
            truncated=[False] * len(comp_lens),
        ),
        rewards=torch.zeros(len(comp_lens)),
        raw_rewards=torch.zeros(len(comp_lens)),
        group_size=g,
    )


def _model(seed: int = 0):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        tie_word_embeddings=False,
    )  # fmt: skip
    return Qwen2ForCausalLM(config).double().eval()


PROMPT_LENS, COMP_LENS = [2, 7, 4], [1, 9, 3, 12, 5, 2, 12, 8, 1, 6, 10, 4]


def _train(method: str, budget: int, **overrides) -> tuple[dict, dict]:
    """One rollout's inner steps on the float64 model; (final weights, logged metrics)."""
    torch.set_num_threads(1)
    model = _model()
    exp = _experience(PROMPT_LENS, COMP_LENS)
    settings = dict(
        method=method, prompts_per_step=P, group_size=G, max_new_tokens=12, minibatch_size=N,
        microbatch_tokens=budget, eps_low=0.05, eps_high=0.05, max_grad_norm=0.0,
    )  # fmt: skip
    cfg = tiny_cfg(**{**settings, **overrides})
    gen = torch.Generator().manual_seed(1)
    exp.advantages = torch.randn(N, generator=gen)
    logp, _ = sequence_logprobs(model, exp, pad_id=0, microbatch=N, chunk_size=16,
                                with_entropy=False)  # fmt: skip
    # an old policy away from θ so that the ratios differ from 1 and the clips bite
    exp.old_logp = (logp + 0.2 * torch.randn(logp.shape, generator=gen)) * (logp != 0)
    if cfg.beta > 0:
        exp.ref_logp = logp - 0.1
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    result = inner_steps(model, optimizer, scheduler, exp, cfg, step=1, pad_id=0)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, result.metrics


@pytest.mark.parametrize(
    ("method", "overrides"),
    [
        ("grpo", {}),
        ("tic_grpo", {}),
        ("dapo", {"dynamic_sampling": False, "overlong_buffer": 0}),
        ("grpo", {"minibatch_size": 6, "epochs_per_rollout": 2, "beta": 0.1}),
    ],
)
def test_token_budget_gives_the_same_weights_and_metrics(method, overrides) -> None:
    base_w, base_m = _train(method, 0, **overrides)
    # 40 padded tokens: 2–3 rows per micro-batch here, several micro-batches per mini-batch
    w, m = _train(method, 40, **overrides)
    moved = max(float((base_w[k] - _model().state_dict()[k]).abs().max()) for k in base_w)
    assert moved > 1e-4  # the step did something
    for name in base_w:
        torch.testing.assert_close(w[name], base_w[name], rtol=1e-10, atol=1e-12, msg=name)
    assert m.keys() == base_m.keys()
    for key in base_m.keys() - {"update/padding_frac"}:
        assert m[key] == pytest.approx(base_m[key], rel=1e-6, abs=1e-9), key
    assert base_m["clip_ratio/region"] > 0  # the clip was active, so its metrics were compared
    assert m["update/padding_frac"] < base_m["update/padding_frac"]  # what the budget is for
    if base_m["update/inner_steps"] == 1:  # one forward of all 12 rows: by hand
        real = sum(PROMPT_LENS[i // G] + c for i, c in enumerate(COMP_LENS))
        laid = N * (max(PROMPT_LENS) + max(COMP_LENS))
        assert base_m["update/padding_frac"] == pytest.approx(1 - real / laid)


def test_old_logprob_pass_with_budget_scatters_rows_back() -> None:
    torch.set_num_threads(1)
    model, exp = _model(), _experience(PROMPT_LENS, COMP_LENS)
    ref, ref_ent = sequence_logprobs(model, exp, pad_id=0, microbatch=N, chunk_size=16,
                                     with_entropy=True)  # fmt: skip
    out, ent = sequence_logprobs(model, exp, pad_id=0, microbatch=N, chunk_size=16,
                                 with_entropy=True, microbatch_tokens=30)  # fmt: skip
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ent, ref_ent, rtol=1e-6, atol=1e-6)


def test_split_by_hand() -> None:
    # prompt 4 (all rows) + completions 1, 5, 2, 5: totals 5, 9, 6, 9
    exp = _experience([4], [1, 5, 2, 5])
    parts = microbatches(exp, torch.arange(4), max_rows=0, max_tokens=18)
    # longest first (ties keep order): [1, 3] costs 2·9 = 18; then [2, 0] costs 2·6 = 12
    assert [p.tolist() for p in parts] == [[1, 3], [2, 0]]
    batch = collate(exp, parts[1], 0, "cpu")
    assert batch.input_ids.shape == (2, 4 + 2)  # padded to its own longest row, not the budget
    assert [p.tolist() for p in microbatches(exp, torch.arange(4), max_rows=2)] == [[0, 1], [2, 3]]
    # a row above the budget goes alone
    assert [p.tolist() for p in microbatches(exp, torch.arange(4), max_rows=0, max_tokens=3)] == [
        [1], [3], [2], [0],
    ]  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(
    prompts=st.lists(st.integers(1, 9), min_size=1, max_size=4),
    comps=st.lists(st.integers(1, 12), min_size=1, max_size=4),
    budget=st.integers(1, 80),
    max_rows=st.integers(0, 5),
)
def test_split_is_a_partition_within_budget(prompts, comps, budget, max_rows) -> None:
    exp = _experience(prompts, [c for c in comps for _ in prompts])
    rows = torch.randperm(len(exp), generator=torch.Generator().manual_seed(budget))
    parts = microbatches(exp, rows, max_rows=max_rows, max_tokens=budget)
    assert sorted(torch.cat(parts).tolist()) == sorted(rows.tolist())
    for part in parts:
        batch = collate(exp, part, 0, "cpu")
        assert len(part) == 1 or batch.input_ids.numel() <= budget
        assert max_rows == 0 or len(part) <= max_rows


def test_exact_count_halves_the_largest_micro_batch() -> None:
    exp = _experience([4], [1, 5, 2, 5])  # row totals 5, 9, 6, 9
    # the budget alone gives [[1, 3], [2, 0]] (areas 18 and 12); a third part halves [1, 3]
    parts = microbatches(exp, torch.arange(4), max_rows=0, max_tokens=18, count=3)
    assert [p.tolist() for p in parts] == [[1], [3], [2, 0]]
    parts = microbatches(exp, torch.arange(4), max_rows=2, count=4)  # the row path too
    assert [p.tolist() for p in parts] == [[0], [1], [2], [3]]
    with pytest.raises(ValueError, match="already needs 2"):
        microbatches(exp, torch.arange(4), max_rows=0, max_tokens=18, count=1)
    with pytest.raises(ValueError, match="4 rows into exactly 5"):
        microbatches(exp, torch.arange(4), max_rows=0, max_tokens=18, count=5)


@settings(max_examples=60, deadline=None)
@given(
    comps=st.lists(st.integers(1, 12), min_size=2, max_size=9),
    budget=st.integers(1, 80),
    extra=st.integers(0, 8),
)
def test_exact_count_is_a_partition_within_budget(comps, budget, extra) -> None:
    exp = _experience([3], comps)
    rows = torch.arange(len(comps))
    base = microbatches(exp, rows, max_rows=0, max_tokens=budget)
    count = min(len(comps), len(base) + extra)
    parts = microbatches(exp, rows, max_rows=0, max_tokens=budget, count=count)
    assert len(parts) == count
    assert sorted(torch.cat(parts).tolist()) == rows.tolist()
    for part in parts:
        assert len(part) == 1 or collate(exp, part, 0, "cpu").input_ids.numel() <= budget


def test_config_checks() -> None:
    cfg = C.build_config(preset="tiny", overrides=["microbatch_tokens=512"])
    assert cfg.microbatch_tokens == 512
    with pytest.raises(C.ConfigError, match="microbatch_tokens=-1"):
        C.build_config(preset="tiny", overrides=["microbatch_tokens=-1"])


def test_token_budget_reaches_the_old_logprob_pass_without_changing_the_run(tmp_path, monkeypatch):
    """End to end (2 inner steps, so the old-log-prob pass runs): same metrics and weights."""
    import llm.train as T
    from tests.test_llm_train import final_weights, read_metrics, shared_tiny_model, strip_timing

    seen = []
    real = T.sequence_logprobs
    monkeypatch.setattr(T, "sequence_logprobs", lambda *a, **k: seen.append(k) or real(*a, **k))
    runs = {}
    for budget in (0, 24):
        cfg = tiny_cfg(shared_tiny_model(), minibatch_size=8, total_steps=2,
                       microbatch_tokens=budget)  # fmt: skip
        T.train(cfg, tmp_path / f"b{budget}")
        runs[budget] = tmp_path / f"b{budget}"
    assert [k["microbatch_tokens"] for k in seen] == [0, 0, 24, 24]
    a, b = strip_timing(read_metrics(runs[0])), strip_timing(read_metrics(runs[24]))
    assert len(a) == len(b) == 2
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for k in ra.keys() - {"update/padding_frac"}:  # the one metric the budget changes
            assert ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-6), k
        assert rb["update/padding_frac"] <= ra["update/padding_frac"]
    wa, wb = final_weights(runs[0]), final_weights(runs[24])
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)
