"""A plain run is the world-size-1 case of the communicator (``llm.parallel``).

Every call the training loop makes through ``Comm`` must, in a world of one, give what the
single-process code gave: reductions return their input, seeds are unchanged, ``shard`` and
``unsharded`` leave the model alone, checkpoints are ``save_checkpoint``'s bytes, evaluation is
``evaluate``'s metrics. The 2-process behaviour is tested in tests/test_llm_distributed_train.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from llm.config.train_config import ConfigError
from llm.evaluate import evaluate, evaluate_on_ranks
from llm.parallel.checkpoint import load_full_checkpoint, model_layout, save_full_checkpoint
from llm.parallel.collectives import DistInfo
from llm.parallel.comm import (
    WORLD_OF_ONE,
    Comm,
    as_comm,
    local_prompts,
    on_main,
    reduce_step_metrics,
    start,
)
from llm.parallel.fsdp import is_sharded, shard, unsharded
from llm.runstate.checkpoint import load_checkpoint, save_checkpoint


def test_reductions_are_identities_and_seeds_unchanged():
    comm = WORLD_OF_ONE
    assert (comm.rank, comm.world_size, comm.is_main) == (0, 1, True)
    assert comm.sum([1, 2.5]) == [1.0, 2.5]
    assert comm.gather([("a", 1), None]) == [("a", 1), None]
    assert comm.broadcast({"k": [1]}) == {"k": [1]}
    assert comm.seed(12345) == 12345  # the single-process draws
    comm.barrier()
    # the formula of a larger world, without a process group (seed only reads rank and size)
    assert Comm(DistInfo(rank=1, world_size=2)).seed(12345) == 12345 * 65_537 + 1
    assert as_comm(None) is WORLD_OF_ONE and as_comm(comm) is comm


def test_start_without_torchrun_is_a_world_of_one_on_the_configured_device(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    for distributed in (False, True):
        comm = start(SimpleNamespace(distributed=distributed, device="cpu"))
        assert comm.world_size == 1 and comm.device == torch.device("cpu")
        assert comm.info.backend is None  # no process group was joined


def test_on_main_returns_and_raises_what_fn_does():
    assert on_main(WORLD_OF_ONE, lambda: 7) == 7
    err = ConfigError(["x must be > 0"])

    def bad():
        raise err

    with pytest.raises(ConfigError) as got:
        on_main(WORLD_OF_ONE, bad)
    assert got.value is err
    with pytest.raises(ZeroDivisionError):
        on_main(WORLD_OF_ONE, lambda: 1 / 0)


def test_local_prompts_is_the_stream_itself():
    drawn = []

    def stream(k):
        drawn.append(k)
        return [f"p{len(drawn)}.{i}" for i in range(k)]

    draw = local_prompts(stream, WORLD_OF_ONE)
    assert draw(3) == ["p1.0", "p1.1", "p1.2"] and drawn == [3]


def test_step_metrics_come_back_as_they_are():
    """Not recomputed from (sum, count) nor re-sorted: the single-process values and key order."""
    local = {"loss": 0.5, "timing/step_s": 2.0, "entropy": 1.2, "tokens_per_s": 9.5}
    out = reduce_step_metrics(WORLD_OF_ONE, local, entropy=(10.0, 8.0), tokens=18)
    assert out == local and list(out) == list(local)


def test_shard_and_unsharded_leave_a_single_process_model_alone():
    model = torch.nn.Linear(3, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert shard(WORLD_OF_ONE, model) is model and not is_sharded(model)
    with unsharded(model) as inside:
        assert inside is model
    assert "_is_fsdp_managed_module" not in model.__dict__
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def _trained(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    model(torch.randn(5, 4)).square().sum().backward()
    opt.step()
    sched.step()
    return model, opt, sched


def test_checkpoint_glue_writes_and_reads_the_single_process_files(tmp_path):
    model, opt, sched = _trained(0)
    state = {"step": 3, "data_pos": 12, "skipped_steps": 0}
    glue = save_full_checkpoint(WORLD_OF_ONE, tmp_path / "glue", 3, model=model, optimizer=opt,
                                scheduler=sched, trainer_state=state, keep=2,
                                layout=model_layout(model))  # fmt: skip
    plain = save_checkpoint(tmp_path / "plain", 3, model=model, optimizer=opt, scheduler=sched,
                            trainer_state=state, keep=2)  # fmt: skip
    names = sorted(p.name for p in plain.iterdir())
    assert names == sorted(p.name for p in glue.iterdir())
    for name in names:  # no random draw between the saves: even rng.pt is the same
        assert (glue / name).read_bytes() == (plain / name).read_bytes(), name

    fresh, opt2, sched2 = _trained(1)
    assert load_checkpoint(glue, model=fresh, optimizer=None) == state
    load_full_checkpoint(glue, model=fresh, optimizer=opt2, scheduler=sched2,
                         layout=model_layout(fresh))  # fmt: skip
    assert torch.equal(fresh[0].weight, model[0].weight)
    got, want = opt2.state_dict()["state"], opt.state_dict()["state"]
    assert all(torch.equal(got[i]["exp_avg"], want[i]["exp_avg"]) for i in want)
    assert sched2.state_dict() == sched.state_dict()


def _stub_generate(model, tokenizer, prompts, *, num_samples, max_new_tokens, **kw):
    """Problem i's sample j answers str(j) with j+1 tokens; samples of a prompt contiguous."""
    texts, ids, trunc = [], [], []
    for p in prompts:
        for j in range(num_samples):
            texts.append(f"{p} -> {j}")
            ids.append(list(range(min(j + 1, max_new_tokens))))
            trunc.append(j + 1 > max_new_tokens)
    return SimpleNamespace(texts=texts, completion_ids=ids, truncated=trunc, prompt_ids=[])


def test_evaluation_over_one_rank_is_evaluate():
    examples = [SimpleNamespace(answer=a, row=i) for i, a in enumerate("019")]
    kw = dict(k=4, max_new_tokens=3, temperature=0.7, seed=3, generate_fn=_stub_generate,
              render_fn=lambda ex, tok, chat_template: f"q{ex.row}",
              reward=lambda cs, ans: [float(c.split()[-1] == a) for c, a in zip(cs, ans)])  # fmt: skip
    want = evaluate(torch.nn.Linear(1, 1), None, examples, **kw)
    want.pop("problems")
    got = evaluate_on_ranks(WORLD_OF_ONE, torch.nn.Linear(1, 1), None, examples, **kw)
    timing = "eval/generate_s"
    assert list(got) == list(want)
    assert {k: v for k, v in got.items() if k != timing} == {
        k: v for k, v in want.items() if k != timing
    }
    assert type(got["eval/nonfinite_rewards"]) is int  # a count, as evaluate logs it
