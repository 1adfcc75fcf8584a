"""ticgrpo.integrations.trl against TRL itself, on the tiny model (CPU).

- On the same micro-batch, our ``grpo`` / ``dapo`` / ``dr_grpo`` / ``gspo`` through
  ``TicGRPOTrainer._compute_loss`` equal TRL's own ``loss_type`` losses (GSPO: ``grpo`` with
  ``importance_sampling_level="sequence"``) in value and in every parameter's gradient, with
  gradient accumulation, a multi-step generation batch, β > 0 and TRL's vLLM importance
  correction (``importance_sampling_ratio``, passed to us as ``token_weights``).
- Every method of ``ticgrpo.METHODS`` gives a finite loss and gradient through the trainer.
- A few real training steps of ``TicGRPOTrainer`` (TRL's generation, rewards and optimizer).

TRL is installed by the README's test command (the ``trl`` extra). Without it this file is
skipped, except under CI (``CI`` set, as ``.ci/run`` runs), where the import error fails the run.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch

from ticgrpo import METHODS, policy_loss

if not os.environ.get("CI"):
    pytest.importorskip("trl", reason='TRL not installed: pip install -e ".[trl]"')
from datasets import Dataset  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from ticgrpo.integrations.trl import (  # noqa: E402
    TicGRPOConfig,
    TicGRPOTrainer,
    check_trl_version,
    trl_normalisers,
)

B, P_LEN, T = 4, 5, 6  # sequences per micro-batch, prompt width, completion width (= budget)

#: ours -> (TRL's loss_type, TRL's importance_sampling_level, ε_low, ε_high, log-ratio noise)
PEERS = {
    "grpo": ("grpo", "token", 0.2, 0.2, 0.3),
    "dapo": ("dapo", "token", 0.2, 0.28, 0.3),
    "dr_grpo": ("dr_grpo", "token", 0.2, 0.2, 0.3),
    "gspo": ("grpo", "sequence", 3e-4, 4e-4, 1e-3),
}


def _zero_reward(completions, **kwargs):
    return [0.0] * len(completions)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from llm.data.tiny import build_tiny

    return str(build_tiny(tmp_path_factory.mktemp("trl") / "model", seed=0))


def _config_kwargs(out_dir, **over) -> dict:
    kw = dict(
        output_dir=str(out_dir), use_cpu=True, report_to="none", save_strategy="no",
        per_device_train_batch_size=B, num_generations=B, max_completion_length=T,
        disable_tqdm=True, dataloader_num_workers=0, log_completions=False,
        seed=0,
    )  # fmt: skip
    kw.update(over)
    return kw


def _trainer(cls, config, model_dir):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ds = Dataset.from_dict({"prompt": ["1 plus 2 = ?"] * 8})
    return cls(model=model, reward_funcs=_zero_reward, args=config, train_dataset=ds,
               processing_class=AutoTokenizer.from_pretrained(model_dir))  # fmt: skip


@pytest.fixture(scope="module")
def trainers(model_dir, tmp_path_factory):
    """(TRL's GRPOTrainer, our TicGRPOTrainer) on identical copies of the tiny model, β = 0.1
    (the KL term is switched off per case by setting ``beta`` on both)."""
    out = tmp_path_factory.mktemp("trainers")
    theirs = _trainer(GRPOTrainer, GRPOConfig(**_config_kwargs(out / "a", beta=0.1,
                                              use_bias_correction_kl=False)), model_dir)  # fmt: skip
    ours = _trainer(TicGRPOTrainer, TicGRPOConfig(**_config_kwargs(out / "b", beta=0.1,
                                                  use_bias_correction_kl=False)), model_dir)  # fmt: skip
    return theirs, ours


def _inputs(model, noise: float, seed: int, beta: bool, is_ratio: bool) -> dict:
    """A micro-batch as ``_generate_and_score_completions`` hands it over: left-padded prompts,
    right-padded completions of lengths 6/3/5/1, advantages, stale log-probs (the current ones
    plus ``noise``-scaled Gaussian noise), reference log-probs, vLLM IS ratios."""
    g = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    prompt_ids = torch.randint(3, vocab, (B, P_LEN), generator=g)
    prompt_mask = torch.ones(B, P_LEN, dtype=torch.long)
    prompt_mask[1, :2] = 0
    completion_ids = torch.randint(3, vocab, (B, T), generator=g)
    lengths = torch.tensor([6, 3, 5, 1])
    completion_mask = (torch.arange(T)[None] < lengths[:, None]).long()
    with torch.no_grad():
        ids = torch.cat([prompt_ids, completion_ids], 1)
        attn = torch.cat([prompt_mask, completion_mask], 1)
        logits = model(input_ids=ids, attention_mask=attn).logits[:, P_LEN - 1 : -1]
        logp = torch.log_softmax(logits.float(), -1).gather(-1, completion_ids[..., None])[..., 0]
    inputs = {
        "prompt_ids": prompt_ids, "prompt_mask": prompt_mask,
        "completion_ids": completion_ids, "completion_mask": completion_mask,
        "advantages": torch.tensor([1.3, -0.7, 0.4, -1.1]),
        "old_per_token_logps": logp + noise * torch.randn(B, T, generator=g),
        "num_items_in_batch": completion_mask.sum() * 2,  # the generation batch: 2 micro-batches
    }  # fmt: skip
    if beta:
        inputs["ref_per_token_logps"] = logp + 0.2 * torch.randn(B, T, generator=g)
    if is_ratio:
        inputs["importance_sampling_ratio"] = torch.exp(0.3 * torch.randn(B, T, generator=g))
    return inputs


def _loss_and_grads(trainer, inputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model = trainer.model
    model.train()
    model.zero_grad(set_to_none=True)
    loss = trainer._compute_loss(model, inputs)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


def _set_common(trainer, *, beta: float, vllm: bool, eps_low: float, eps_high: float) -> None:
    """The attributes TRL's ``_compute_loss`` reads, set alike on both trainers: a generation
    batch of two micro-batches accumulated into one optimizer step."""
    trainer.beta = beta
    trainer.use_vllm = vllm
    trainer.vllm_importance_sampling_correction = vllm
    trainer.epsilon_low, trainer.epsilon_high = eps_low, eps_high
    trainer.current_gradient_accumulation_steps = 2
    trainer.args.steps_per_generation = 2


CASES = [
    (method, beta, vllm)
    for method in PEERS
    for beta, vllm in ((0.0, False), (0.1, False), (0.0, True))
]


@pytest.mark.parametrize("method,beta,vllm", CASES)
def test_equals_trl_loss_type_in_value_and_gradient(trainers, method, beta, vllm):
    _assert_equal_to_trl(trainers, method, beta, vllm)


def _assert_equal_to_trl(trainers, method: str, beta: float, vllm: bool) -> float:
    """TRL's loss_type vs ours on one micro-batch: equal value and gradients; returns the loss."""
    theirs, ours = trainers
    loss_type, level, eps_low, eps_high, noise = PEERS[method]
    for t in trainers:
        _set_common(t, beta=beta, vllm=vllm, eps_low=eps_low, eps_high=eps_high)
    theirs.loss_type, theirs.importance_sampling_level = loss_type, level
    ours.args.method = method
    inputs = _inputs(ours.model, noise, seed=len(method), beta=beta > 0, is_ratio=vllm)

    ours._metrics["train"].clear()
    loss_a, grads_a = _loss_and_grads(theirs, copy.copy(inputs))
    loss_b, grads_b = _loss_and_grads(ours, copy.copy(inputs))

    # the batch exercises the clip (neither none nor all of its tokens clipped)
    region = ours._metrics["train"]["ticgrpo/clip_ratio/region"][-1]
    assert 0 < region < 1, region
    # float32 round-off only (seen: 0 to 1.5e-8 on the loss, 0 on every gradient entry)
    assert abs(float(loss_a) - float(loss_b)) <= 1e-7, (float(loss_a), float(loss_b))
    assert grads_a.keys() == grads_b.keys() and grads_a
    assert max(g.abs().max().item() for g in grads_a.values()) > 1e-3  # a real gradient
    worst = max((grads_a[n] - grads_b[n]).abs().max().item() for n in grads_a)
    assert worst <= 1e-7, worst
    return float(loss_b)


@pytest.mark.parametrize("method", ["dapo", "grpo"])
def test_equals_trl_with_several_processes(trainers, method, monkeypatch):
    """With P = 2 processes each one's micro-batch loss is its share as TRL's: DAPO divides by
    num_items_in_batch / P (the loss doubles), GRPO's per-sequence mean does not depend on P."""
    one = _assert_equal_to_trl(trainers, method, 0.0, False)
    accelerator = type(trainers[1].accelerator)
    monkeypatch.setattr(accelerator, "num_processes", property(lambda self: 2))
    two = _assert_equal_to_trl(trainers, method, 0.0, False)
    assert two == pytest.approx(2 * one if method == "dapo" else one, rel=1e-6)


def test_vllm_ratio_changes_the_loss(trainers):
    """The IS ratio is really applied (the parity above cannot pass by both ignoring it)."""
    _, ours = trainers
    _set_common(ours, beta=0.0, vllm=True, eps_low=0.2, eps_high=0.2)
    ours.args.method = "grpo"
    inputs = _inputs(ours.model, 0.3, seed=4, beta=False, is_ratio=True)
    with_ratio, _ = _loss_and_grads(ours, copy.copy(inputs))
    inputs["importance_sampling_ratio"] = torch.ones(B, T)
    without, _ = _loss_and_grads(ours, inputs)
    assert abs(float(with_ratio) - float(without)) > 1e-4


def _logp(trainer, inputs) -> torch.Tensor:
    """``[B, T]`` log-probs of the completion tokens, with gradient, from TRL's own helper (the
    log-probs are TRL's in both; what is checked is what the trainer does with them)."""
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    attn = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    return trainer._get_per_token_logps_and_entropies(trainer.model, ids, attn, T)[0]


@pytest.mark.parametrize("method", ["tic_grpo", "grpo2", "grpo_traj_is"])
def test_rows_without_a_trl_peer_equal_policy_loss_with_trls_normalisers(trainers, method):
    """TIC-GRPO, GRPO₂ and GRPO+Traj_IS (no TRL loss_type computes them) through the trainer equal
    ``policy_loss`` called directly with TRL's normalisers: ``num_seqs = B·GA``, the budget
    ``max_len = max_completion_length`` (their 1/T) and the vLLM ratios as ``token_weights``."""
    _, ours = trainers
    _set_common(ours, beta=0.0, vllm=True, eps_low=0.2, eps_high=0.28)
    ours.args.method = method
    inputs = _inputs(ours.model, 0.3, seed=5, beta=False, is_ratio=True)
    loss, grads = _loss_and_grads(ours, copy.copy(inputs))

    model = ours.model
    mask = inputs["completion_mask"].bool()
    ref = policy_loss(_logp(ours, inputs), inputs["old_per_token_logps"], inputs["advantages"],
                      mask, method=method, eps_low=0.2, eps_high=0.28, num_seqs=B * 2,
                      max_len=ours.args.max_completion_length,
                      token_weights=inputs["importance_sampling_ratio"])  # fmt: skip
    ref.loss.backward()
    ref_grads = {
        n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None
    }
    model.zero_grad(set_to_none=True)
    assert ref.metrics["clip_ratio/region"] > 0  # the clip binds somewhere
    assert abs(float(loss) - float(ref.loss)) <= 1e-7
    assert max(g.abs().max().item() for g in ref_grads.values()) > 1e-3
    assert max((grads[n] - ref_grads[n]).abs().max().item() for n in ref_grads) <= 1e-7


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_runs_through_the_trainer(trainers, method):
    _, ours = trainers
    _set_common(ours, beta=0.0, vllm=False, eps_low=0.2, eps_high=0.2)
    ours.args.method = method
    loss, grads = _loss_and_grads(
        ours, _inputs(ours.model, 0.3, seed=1, beta=False, is_ratio=False)
    )
    assert torch.isfinite(loss)
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert any(g.abs().max() > 0 for g in grads.values())
    logged = ours._metrics["train"]
    assert {"ticgrpo/loss/policy", "ticgrpo/ess/traj", "entropy"} <= set(logged)


def test_normalisers_follow_trl_conventions():
    n = trl_normalisers(batch_size=4, grad_accum=2, num_items_in_batch=30, num_processes=3,
                        steps_per_generation=4, max_completion_length=256, training=True)  # fmt: skip
    assert n == {"num_seqs": 8.0, "num_tokens": 30 / 3 * 2 / 4, "max_len": 256.0}
    e = trl_normalisers(batch_size=4, grad_accum=2, num_items_in_batch=30, num_processes=3,
                        steps_per_generation=4, max_completion_length=256, training=False)  # fmt: skip
    assert e == {"num_seqs": 4.0, "num_tokens": 10.0, "max_len": 256.0}


def test_version_gate():
    check_trl_version("1.16.0")
    check_trl_version("1.10.0")
    for bad in ("1.9.2", "1.17.0", "0.29.1"):
        with pytest.raises(ImportError, match=r"supports trl>=1\.10\.0,<1\.17\.0.*found trl"):
            check_trl_version(bad)


def test_config_rejects_what_it_cannot_honour(tmp_path):
    kw = _config_kwargs(tmp_path)
    with pytest.raises(ValueError, match="not a ticgrpo method"):
        TicGRPOConfig(**kw, method="ppo")
    with pytest.raises(ValueError, match="importance_sampling_level"):
        TicGRPOConfig(**kw, method="grpo", importance_sampling_level="sequence")
    with pytest.raises(ValueError, match="use_bias_correction_kl"):
        TicGRPOConfig(**kw, beta=0.1)  # TRL's default importance-weights the KL term
    with pytest.raises(ValueError, match="tic_clip applies to tic_grpo only"):
        TicGRPOConfig(**kw, method="grpo", tic_clip="ppo")
    assert TicGRPOConfig(**kw).method == "tic_grpo"
    assert {f.name for f in dataclasses.fields(TicGRPOConfig)} >= {"method", "tic_clip"}


def test_trainer_needs_our_config(model_dir, tmp_path):
    with pytest.raises(TypeError, match="TicGRPOConfig"):
        _trainer(TicGRPOTrainer, GRPOConfig(**_config_kwargs(tmp_path)), model_dir)


def test_a_few_training_steps(tmp_path):
    """TicGRPOTrainer trains the tiny model on the bench workload (bench/_trainer_sides.py: the
    same model, task, reward and GRPOConfig that bench_trainer_vs_trl gives TRL), with K = 2
    inner steps per rollout so the second step sees a stale policy (ratio ≠ 1)."""
    from bench._trainer_sides import _reward, setup_workload, trl_config_kwargs
    from bench.bench_trainer_vs_trl import parse_args

    args = parse_args(["--prompts", "2", "--group", "4", "--steps", "2", "--warmup", "0",
                       "--max-new-tokens", "8", "--inner-steps", "2"])  # fmt: skip
    paths = setup_workload(args, tmp_path)
    table = json.loads(Path(paths["prompts_file"]).read_text())
    ds = Dataset.from_dict({"prompt": table["prompts"], "answer": table["answers"]})
    config = TicGRPOConfig(**trl_config_kwargs(args, tmp_path), method="tic_grpo")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(paths["model_dir"], dtype=torch.float32)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = TicGRPOTrainer(
        model=model,
        reward_funcs=lambda prompts, completions, answer, **kw: _reward(completions, answer),
        args=config, train_dataset=ds,
        processing_class=AutoTokenizer.from_pretrained(paths["model_dir"]),
    )  # fmt: skip
    trainer.train()
    logs = [h for h in trainer.state.log_history if "ticgrpo/loss/policy" in h]
    assert len(logs) == 4  # 2 rollouts x K = 2 optimizer steps, one log line each
    for h in logs:
        assert all(v is None or v == v for v in h.values())  # no NaN
        assert h["ticgrpo/ess/traj_frac"] > 0
    # the second inner step of each rollout sees θ ≠ θ_old: some trajectory log-ratio is non-zero
    assert any(abs(h["ticgrpo/log_ratio/traj_max"]) > 0 for h in logs[1::2])
    moved = max((p.detach() - before[n]).abs().max().item() for n, p in model.named_parameters())
    assert moved > 0
