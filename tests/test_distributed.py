"""FSDP2 data parallel (llm/parallel/): a 2-rank gloo update equals the single-process one.

The file is also the worker script: ``torchrun ... tests/test_distributed.py --worker OUT`` runs
one update per method on its share of the global batch and writes the gathered parameters.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llm.parallel.collectives import gather_list, prompt_shard, reduce_metrics
from tests.torchrun_util import torchrun
from ticgrpo import METHODS, group_advantages, policy_loss

ROOT = Path(__file__).resolve().parents[1]
P, G, PROMPT, RESP, V = 3, 4, 5, 6, 61  # P = 3 prompts over 2 ranks: an uneven split
METHOD_NAMES = ("grpo", "dapo", "tic_grpo", "dr_grpo", "gspo")
LR = 0.5


def build_model():
    import transformers

    cfg = transformers.Qwen2Config(
        vocab_size=V,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    return transformers.Qwen2ForCausalLM(cfg).double()


def make_batch(model) -> dict[str, torch.Tensor]:
    """The global rollout: N = P·G rows, left-padded prompts, right-padded responses."""
    from llm.update.logprobs import naive_token_logprobs

    gen = torch.Generator().manual_seed(123)
    n = P * G
    ids = torch.randint(1, V, (n, PROMPT + RESP), generator=gen)
    am = torch.ones_like(ids)
    for i in range(n):
        am[i, : int(torch.randint(0, 3, (1,), generator=gen))] = 0
        am[i, PROMPT + 1 + int(torch.randint(0, RESP, (1,), generator=gen)) :] = 0
    ids = ids.masked_fill(am == 0, 0)
    rewards = torch.randint(0, 2, (n,), generator=gen).double()
    with torch.no_grad():
        logp = naive_token_logprobs(model, ids, am, logits_to_keep=RESP).logp
    mask = am[:, -RESP:].bool()
    # a stale policy: old log-probs off by up to ±0.3 so that some ratios clip
    old = logp + 0.3 * (2 * torch.rand(logp.shape, generator=gen, dtype=logp.dtype) - 1)
    return dict(ids=ids, am=am, mask=mask, rewards=rewards, old=old.masked_fill(~mask, 0.0))


def update(
    model, opt, batch, rows: range, method: str, norms: dict[str, float]
) -> dict[str, float]:
    """One step of ``opt`` for ``method`` on ``rows`` of the batch with the given normalisers."""
    from llm.update.logprobs import token_logprobs

    sl = slice(rows.start * G, rows.stop * G)
    row = METHODS[method]
    adv = group_advantages(batch["rewards"][sl], G, mode=row.advantage_mode)
    logp = token_logprobs(model, batch["ids"][sl], batch["am"][sl], logits_to_keep=RESP).logp
    out = policy_loss(
        logp,
        batch["old"][sl],
        adv,
        batch["mask"][sl],
        method=method,
        eps_low=row.eps_low,
        eps_high=row.eps_high,
        **norms,
    )
    opt.zero_grad(set_to_none=True)
    out.loss.backward()
    opt.step()
    return out.metrics


def worker(out_dir: str) -> None:
    from llm.parallel.collectives import global_normalisers, init_distributed, teardown
    from llm.parallel.fsdp import reshard, shard_model
    from llm.update.logprobs import naive_token_logprobs, token_logprobs

    info = init_distributed()
    try:
        torch.set_num_threads(1)
        rows = prompt_shard(P, info.world_size, info.rank)
        report: dict = {"rank": info.rank, "rows": [rows.start, rows.stop]}
        for method in METHOD_NAMES:
            model = build_model()
            batch = make_batch(model)  # identical on every rank: same seeds, float64
            with torch.no_grad():
                before = naive_token_logprobs(model, batch["ids"], batch["am"]).logp
            shard_model(model)
            # built before any forward: it must hold the sharded parameters (see shard_model)
            opt = torch.optim.SGD(model.parameters(), lr=LR)
            with torch.no_grad():  # the old-log-prob pass: a no-grad forward of the sharded model
                after = token_logprobs(model, batch["ids"], batch["am"], chunk_size=5).logp
            reshard(model)
            report[f"nograd_diff/{method}"] = float((after - before).abs().max())
            local_mask = batch["mask"][rows.start * G : rows.stop * G]
            norms = global_normalisers(local_mask, max_len=RESP)
            report[f"norms/{method}"] = norms
            update(model, opt, batch, rows, method, norms)
            full = {k: v.full_tensor() for k, v in model.state_dict().items()}
            if info.is_main:
                torch.save(full, Path(out_dir) / f"params_{method}.pt")
        local_rewards = batch["rewards"][rows.start * G : rows.stop * G]
        metrics = {
            "reward/mean": float(local_rewards.mean()),
            "reward/max": float(local_rewards.max()),
            "reward/min": float(local_rewards.min()),
            "count/seqs": float(local_rewards.numel()),
        }
        report["metrics"] = reduce_metrics(metrics, weight=local_rewards.numel())
        report["gathered_rewards"] = gather_list(local_rewards.tolist())
        (Path(out_dir) / f"rank{info.rank}.json").write_text(json.dumps(report))
    finally:
        teardown()


def run_torchrun(out_dir: Path, timeout_s: float = 90.0) -> subprocess.CompletedProcess:
    """2-rank gloo run of this file."""
    return torchrun([__file__, "--worker", str(out_dir)], cwd=ROOT, timeout_s=timeout_s)


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory) -> Path:
    out_dir = tmp_path_factory.mktemp("dist")
    res = run_torchrun(out_dir)
    assert res.returncode == 0, res.stdout[-4000:]
    return out_dir


@pytest.mark.distributed
@pytest.mark.parametrize("method", METHOD_NAMES)
def test_two_rank_update_equals_single_process(two_rank_run: Path, method: str) -> None:
    model = build_model()
    batch = make_batch(model)
    norms = {"num_seqs": float(P * G), "num_tokens": float(batch["mask"].sum()), "max_len": RESP}
    update(model, torch.optim.SGD(model.parameters(), lr=LR), batch, range(0, P), method, norms)
    sharded = torch.load(two_rank_run / f"params_{method}.pt")
    single = model.state_dict()
    assert sharded.keys() == single.keys()
    moved = 0.0
    for name, value in single.items():
        torch.testing.assert_close(sharded[name], value, rtol=1e-10, atol=1e-12, msg=name)
        moved += float((value - build_model().state_dict()[name]).abs().sum())
    assert moved > 1e-3  # the step did change the parameters


@pytest.mark.distributed
def test_two_rank_normalisers_metrics_and_gather(two_rank_run: Path) -> None:
    ranks = [json.loads((two_rank_run / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rows"] for r in ranks] == [[0, 2], [2, 3]]  # uneven: 2 prompts and 1 prompt
    batch = make_batch(build_model())
    rewards = batch["rewards"]
    for method in METHOD_NAMES:
        for r in ranks:
            assert r[f"nograd_diff/{method}"] < 1e-12  # sharded no-grad log-probs are exact
            assert r[f"norms/{method}"]["num_seqs"] == P * G
            assert r[f"norms/{method}"]["num_tokens"] == float(batch["mask"].sum())
    for r in ranks:
        m = r["metrics"]
        assert m["reward/mean"] == pytest.approx(float(rewards.mean()), abs=1e-12)
        assert m["reward/max"] == float(rewards.max()) and m["reward/min"] == float(rewards.min())
        assert m["count/seqs"] == P * G
        assert r["gathered_rewards"] == rewards.tolist()


@settings(max_examples=50, deadline=None)
@given(prompts=st.integers(1, 40), world=st.integers(1, 9))
def test_prompt_shard_partitions_whole_groups(prompts: int, world: int) -> None:
    if prompts < world:
        with pytest.raises(ValueError, match="at least one prompt per rank"):
            prompt_shard(prompts, world, 0)
        return
    shards = [prompt_shard(prompts, world, r) for r in range(world)]
    assert [p for s in shards for p in s] == list(range(prompts))  # contiguous, each once
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    assert sizes == sorted(sizes, reverse=True)  # the extra prompts go to the first ranks


@pytest.mark.parametrize("mode", ["std", "mean", "rloo", "length_corrected", "none"])
def test_local_group_advantages_equal_global_slices(mode: str) -> None:
    """Whole groups per rank make locally computed advantages exact."""
    gen = torch.Generator().manual_seed(3)
    prompts, group = 7, 5
    rewards = torch.rand(prompts * group, generator=gen, dtype=torch.float64)
    rewards[:group] = 1.0  # an all-equal group
    lengths = torch.randint(1, 30, (prompts * group,), generator=gen)
    kw = {"lengths": lengths} if mode == "length_corrected" else {}
    full = group_advantages(rewards, group, mode=mode, **kw)
    for world in (2, 3):
        parts = []
        for r in range(world):
            rows = prompt_shard(prompts, world, r)
            sl = slice(rows.start * group, rows.stop * group)
            local_kw = {"lengths": lengths[sl]} if kw else {}
            parts.append(group_advantages(rewards[sl], group, mode=mode, **local_kw))
        torch.testing.assert_close(torch.cat(parts), full, rtol=0, atol=0)


def test_helpers_are_identities_without_a_process_group() -> None:
    from llm.parallel.collectives import global_normalisers, init_distributed

    assert not torch.distributed.is_initialized()
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    assert global_normalisers(mask, max_len=8) == {
        "num_seqs": 2.0,
        "num_tokens": 3.0,
        "max_len": 8.0,
    }
    with pytest.raises(TypeError, match="max_len"):  # the budget is never the padded width
        global_normalisers(mask)
    assert reduce_metrics({"a": 1.5}) == {"a": 1.5}
    assert gather_list([1, 2]) == [1, 2]
    if "WORLD_SIZE" not in os.environ:
        info = init_distributed()
        assert (info.rank, info.world_size, info.enabled) == (0, 1, False)
    with pytest.raises(ValueError, match="not in a world"):
        prompt_shard(4, 2, 2)


if __name__ == "__main__" and "--worker" in sys.argv:
    worker(sys.argv[sys.argv.index("--worker") + 1])
    # skip interpreter teardown: gloo's threads have been seen to abort ("terminate called
    # without an active exception") while Python destroys modules after a clean shutdown
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
