"""Rollouts: shapes, grouping, EOS and truncation, seeding; the tiny model, tokenizer and task."""

from __future__ import annotations

import json

import pytest
import torch

from llm.data.tasks import first_integer, tiny_task_reward, write_tiny_task
from llm.rollout.experience import overlong_penalty
from llm.rollout.sampling import generate, split_completion
from tests.test_llm_train import shared_tiny_model


@pytest.fixture(scope="module")
def model_and_tokenizer():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = shared_tiny_model()
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def _prompts(tok, problems):
    return [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                    add_generation_prompt=True) for p in problems]  # fmt: skip


def test_generate_shapes_grouping_and_flags(model_and_tokenizer):
    model, tok = model_and_tokenizer
    prompts = _prompts(tok, ["repeat 3", "1 plus 2 plus 3"])
    gen = generate(model, tok, prompts, num_samples=3, max_new_tokens=5, seed=1, batch_size=4)
    assert len(gen) == 6 and len(gen.texts) == 6 and len(gen.truncated) == 6
    enc = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    assert gen.prompt_ids == [enc[0]] * 3 + [enc[1]] * 3  # samples of one prompt contiguous
    for ids, trunc, text in zip(gen.completion_ids, gen.truncated, gen.texts):
        assert 1 <= len(ids) <= 5
        assert trunc == (tok.eos_token_id not in ids)
        assert not trunc or len(ids) == 5
        assert trunc or ids[-1] == tok.eos_token_id and ids.count(tok.eos_token_id) == 1
        assert text == tok.decode(ids, skip_special_tokens=True)


def test_generate_is_seeded_and_leaves_global_rng_alone(model_and_tokenizer):
    model, tok = model_and_tokenizer
    prompts = _prompts(tok, ["repeat 7"])
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = generate(model, tok, prompts, num_samples=8, max_new_tokens=4, seed=5)
    assert torch.equal(torch.get_rng_state(), before)
    b = generate(model, tok, prompts, num_samples=8, max_new_tokens=4, seed=5, batch_size=3)
    c = generate(model, tok, prompts, num_samples=8, max_new_tokens=4, seed=6)
    assert (
        a.completion_ids
        == generate(model, tok, prompts, num_samples=8, max_new_tokens=4, seed=5).completion_ids
    )
    assert len(b) == 8
    assert a.completion_ids != c.completion_ids


def test_generate_ignores_checkpoint_generation_defaults(model_and_tokenizer):
    """A top_k=1 generation_config.json must not turn sampling greedy."""
    model, tok = model_and_tokenizer
    model.generation_config.top_k = 1
    try:
        gen = generate(
            model, tok, _prompts(tok, ["repeat 1"]), num_samples=16, max_new_tokens=3, seed=0
        )
    finally:
        model.generation_config.top_k = None
    assert len({tuple(c) for c in gen.completion_ids}) > 1
    assert model.generation_config.top_k is None


def test_generate_rejects_bad_arguments(model_and_tokenizer):
    model, tok = model_and_tokenizer
    with pytest.raises(ValueError, match="temperature"):
        generate(model, tok, ["x"], num_samples=1, max_new_tokens=1, temperature=0.0)
    with pytest.raises(ValueError, match="num_samples"):
        generate(model, tok, ["x"], num_samples=0, max_new_tokens=1)


def test_split_completion():
    assert split_completion([5, 6, 2, 0, 0], {2}) == ([5, 6, 2], False)
    assert split_completion([5, 6, 7], {2}) == ([5, 6, 7], True)
    assert split_completion([2, 2], {2}) == ([2], False)


def test_tiny_tokenizer_round_trips_as_qwen2(model_and_tokenizer):
    _, tok = model_and_tokenizer
    assert type(tok).__name__ == "Qwen2Tokenizer"
    assert len(tok) < 64 and tok.eos_token == "<|im_end|>" and tok.pad_token_id == 0
    text = "repeat 7\n3 plus 4 = 7?"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    cfg = json.loads((shared_tiny_model() / "config.json").read_text())
    assert cfg["model_type"] == "qwen2" and cfg["num_hidden_layers"] == 2


def test_tiny_task_file_and_reward(tmp_path):
    path = write_tiny_task(tmp_path / "t.jsonl", 50, seed=3, kind="add")
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(rows) == 50 and rows == [
        json.loads(x)
        for x in write_tiny_task(tmp_path / "u.jsonl", 50, 3, kind="add").read_text().splitlines()
    ]
    for r in rows:
        a, b = r["problem"].split(" plus ")
        assert int(a) + int(b) == int(r["answer"]) <= 9
    assert first_integer("ab 12 c 3") == "12" and first_integer("none") is None
    assert tiny_task_reward(["7", " 7 plus", "77", "x7", "", "3 7"], ["7"] * 6) == [
        1,
        1,
        0,
        1,
        0,
        0,
    ]
    with pytest.raises(ValueError, match="unknown tiny task"):
        write_tiny_task(tmp_path / "v.jsonl", 5, 0, kind="mul")


def test_overlong_penalty_hand_values():
    lengths = torch.tensor([10, 16, 18, 20])
    got = overlong_penalty(lengths, max_len=20, buffer=4, scale=1.0)
    torch.testing.assert_close(got, torch.tensor([0.0, 0.0, -0.5, -1.0]))
    assert torch.equal(overlong_penalty(lengths, 20, 0, 1.0), torch.zeros(4))


def test_dynamic_sampling_drops_flat_groups_and_refills(monkeypatch):
    """Rewards are scripted: groups whose G rewards are all equal are replaced by fresh ones."""
    import llm.rollout.experience as E
    from llm.rollout.sampling import Generation

    def fake_generate(model, tok, prompts, *, num_samples, **kw):
        n = len(prompts) * num_samples
        texts = [p for p in prompts for _ in range(num_samples)]
        return Generation([[1]] * n, [[2]] * n, texts, [False] * n)

    # prompt "flat" -> all rewards 0; prompt "mixed" -> one sample right
    script = iter(
        [["flat", "mixed", "flat"], ["mixed", "flat", "flat"], ["mixed", "mixed", "mixed"]]
    )
    monkeypatch.setattr(E, "generate", fake_generate)

    def reward(texts, answers):
        out, seen = [], {}
        for t in texts:
            seen[t] = seen.get(t, 0) + 1
            out.append(1.0 if t.startswith("mixed") and seen[t] % 2 == 1 else 0.0)
        return out

    counter = iter(range(100))

    def next_prompts(k):
        names = next(script)[:k]
        return [(f"{n}{next(counter)}", "a") for n in names]

    exp = E.collect(None, None, next_prompts, reward, num_prompts=3, group_size=2, max_new_tokens=4,
                    temperature=1.0, top_p=1.0, seed=0, batch_size=None, dynamic_sampling=True,
                    max_rounds=4)  # fmt: skip
    assert [p.rstrip("0123456789") for p in exp.prompts] == ["mixed"] * 3
    groups = exp.rewards.view(-1, 2)
    assert bool((groups[:, 0] != groups[:, 1]).all())
    assert exp.stats["dynamic_sampling/rounds"] == 3
    assert exp.stats["frac_reward_zero_std"] == pytest.approx(2 / 3)  # first round's groups
