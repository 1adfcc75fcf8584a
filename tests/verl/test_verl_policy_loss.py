"""ticgrpo.integrations.verl against verl itself (runs in .venv-verl; see conftest.py).

- ``import verl`` alone registers every ``ticgrpo_<method>`` (the ``verl.plugins`` entry point).
- ``ticgrpo_tic_grpo`` from verl's registry equals ``ticgrpo.policy_loss`` on the same tensors.
- Our ``grpo`` / ``dapo`` / ``gspo`` equal verl's built-in ``vanilla`` / ``vanilla`` / ``gspo``
  losses in value and gradient, with and without verl's global batch info (2 data-parallel
  ranks), and with verl's ``rollout_is_weights``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import verl
from packaging.version import Version
from verl.trainer.ppo.core_algos import get_policy_loss_fn
from verl.workers.config import ActorConfig

import ticgrpo
from ticgrpo.integrations import verl as plugin

N, T = 6, 7
LENGTHS = [7, 3, 5, 1, 0, 6]  # one empty response

#: ours -> (verl's loss_mode, loss_agg_mode, ε_low, ε_high, log-ratio noise)
PEERS = {
    "grpo": ("vanilla", "seq-mean-token-mean", 0.2, 0.2, 0.3),
    "dapo": ("vanilla", "token-mean", 0.2, 0.28, 0.3),
    "gspo": ("gspo", "seq-mean-token-mean", 3e-4, 4e-4, 1e-3),
}


def _config(agg_mode: str, eps_low: float, eps_high: float, info: dict | None, scale=None):
    cfg = ActorConfig(strategy="fsdp", rollout_n=2, ppo_micro_batch_size_per_gpu=2,
                      use_torch_compile=False, clip_ratio_low=eps_low, clip_ratio_high=eps_high,
                      loss_agg_mode=agg_mode, loss_scale_factor=scale)  # fmt: skip
    cfg.global_batch_info.update(info or {})
    return cfg


def _tensors(noise: float, seed: int):
    """verl's layout: right-padded responses, advantages broadcast over response tokens (0 on
    padding), old log-probs = current + noise, rollout IS weights."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(T)[None] < torch.tensor(LENGTHS)[:, None]  # [N, T]
    logp = (-torch.rand(N, T, generator=g) * 3).requires_grad_()
    old = logp.detach() + noise * torch.randn(N, T, generator=g)
    adv = torch.tensor([1.2, -0.8, 0.5, -1.4, 0.9, -0.3])[:, None] * mask
    is_w = torch.exp(0.2 * torch.randn(N, T, generator=g))
    return logp, old, adv, mask, is_w


def _value_grad(fn, logp, *args, **kw):
    logp.grad = None
    loss, metrics = fn(*args, log_prob=logp, **kw)
    loss.backward()
    return loss.detach(), logp.grad.clone(), metrics


GLOBAL = {"dp_size": 2, "batch_num_tokens": 50, "global_batch_size": 12}


@pytest.mark.parametrize("hook", ["entry_point", "external_modules"])
def test_import_verl_alone_registers_every_method(hook):
    """A fresh interpreter that imports verl alone (as a Ray worker does) sees our losses: through
    the ``verl.plugins`` entry point (verl >= 0.9) or ``VERL_USE_EXTERNAL_MODULES``."""
    if hook == "entry_point" and Version(verl.__version__) < Version("0.9.0"):
        pytest.skip(f"verl {verl.__version__} has no verl.plugins entry points (from 0.9.0)")
    code = (
        "import sys, verl\n"
        "from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY as R\n"
        "assert 'ticgrpo.integrations.verl' in sys.modules, 'plugin not loaded'\n"
        "print(' '.join(sorted(k for k in R if k.startswith('ticgrpo_'))))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "VERL_USE_EXTERNAL_MODULES"}
    if hook == "external_modules":
        env.update(VERL_USE_EXTERNAL_MODULES="ticgrpo.integrations.verl",
                   VERL_USE_EXTERNAL_PLUGINS="none")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == sorted(f"ticgrpo_{m}" for m in ticgrpo.METHODS)
    assert set(plugin.REGISTERED) == {f"ticgrpo_{m}" for m in ticgrpo.METHODS}


@pytest.mark.parametrize("info", [None, GLOBAL], ids=["local", "global"])
@pytest.mark.parametrize("is_weights", [False, True], ids=["no_is", "rollout_is"])
@pytest.mark.parametrize("method", sorted(PEERS))
def test_equals_verl_builtin_in_value_and_gradient(method, info, is_weights):
    mode, agg, eps_low, eps_high, noise = PEERS[method]
    logp, old, adv, mask, is_w = _tensors(noise, seed=len(method))
    if method == "gspo":  # a sequence-level ratio: verl's sequence-level IS weights (see below)
        is_w = _per_sequence_mean(is_w, mask)
    kw = dict(old_log_prob=old, advantages=adv, response_mask=mask, loss_agg_mode=agg,
              rollout_is_weights=is_w if is_weights else None)  # fmt: skip
    theirs = _value_grad(get_policy_loss_fn(mode), logp,
                         config=_config(agg, eps_low, eps_high, info), **kw)  # fmt: skip
    ours = _value_grad(get_policy_loss_fn(f"ticgrpo_{method}"), logp,
                       config=_config(agg, eps_low, eps_high, info), **kw)  # fmt: skip
    region = ours[2]["actor/ticgrpo/clip_ratio/region"]
    assert 0 < region < 1, region  # the clip binds on some tokens, not all
    assert abs(float(theirs[0]) - float(ours[0])) <= 1e-7, (theirs[0], ours[0])
    assert theirs[1].abs().max() > 1e-3
    torch.testing.assert_close(ours[1], theirs[1], rtol=0, atol=1e-7)
    assert ours[2]["actor/pg_clipfrac"] == pytest.approx(theirs[2]["actor/pg_clipfrac"], abs=1e-6)
    assert ours[2]["actor/ppo_kl"] == pytest.approx(theirs[2]["actor/ppo_kl"], abs=1e-6)


def _per_sequence_mean(w: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each response's mean weight over its tokens, broadcast back to ``[N, T]``."""
    m = mask.to(w.dtype)
    return ((w * m).sum(1) / m.sum(1).clamp(min=1))[:, None].expand_as(w).contiguous()


def test_gspo_with_token_varying_is_weights_uses_each_responses_mean_weight():
    """With a sequence-level ratio, ticgrpo's token_weights scale each response's term by the
    mean of its tokens' weights (value and gradient). verl's gspo gives each token's score its
    own weight in the gradient (its per-token gradient trick), with the same value: so ours
    equals verl's fed the per-response mean weights, and differs from verl's fed the raw ones."""
    mode, agg, eps_low, eps_high, noise = PEERS["gspo"]
    logp, old, adv, mask, is_w = _tensors(noise, seed=11)
    kw = dict(old_log_prob=old, advantages=adv, response_mask=mask, loss_agg_mode=agg)
    cfg = _config(agg, eps_low, eps_high, GLOBAL)
    ours = _value_grad(get_policy_loss_fn("ticgrpo_gspo"), logp, config=cfg,
                       rollout_is_weights=is_w, **kw)  # fmt: skip
    raw = _value_grad(get_policy_loss_fn(mode), logp, config=cfg, rollout_is_weights=is_w, **kw)
    mean = _value_grad(get_policy_loss_fn(mode), logp, config=cfg,
                       rollout_is_weights=_per_sequence_mean(is_w, mask), **kw)  # fmt: skip
    assert abs(float(ours[0]) - float(raw[0])) <= 1e-6
    assert abs(float(ours[0]) - float(mean[0])) <= 1e-6
    torch.testing.assert_close(ours[1], mean[1], rtol=0, atol=1e-7)
    assert (ours[1] - raw[1]).abs().max() > 1e-3


@pytest.mark.parametrize("info", [None, GLOBAL], ids=["local", "global"])
def test_tic_grpo_through_verls_registry_equals_policy_loss(info):
    logp, old, adv, mask, _ = _tensors(0.1, seed=7)
    cfg = _config("seq-mean-token-sum-norm", 0.2, 0.28, info, scale=T + 5)
    fn = get_policy_loss_fn("ticgrpo_tic_grpo")
    loss, grad, metrics = _value_grad(fn, logp, old_log_prob=old, advantages=adv,
                                      response_mask=mask, loss_agg_mode="seq-mean-token-sum-norm",
                                      config=cfg)  # fmt: skip
    num_seqs = 6.0 if info else 5.0  # global 12 / dp 2; locally the non-empty responses
    num_tokens = 25.0 if info else float(sum(LENGTHS))
    logp.grad = None
    ref = ticgrpo.policy_loss(logp, old, adv[:, 0], mask, method="tic_grpo", eps_low=0.2,
                              eps_high=0.28, num_seqs=num_seqs, num_tokens=num_tokens,
                              max_len=float(T + 5))  # fmt: skip
    ref.loss.backward()
    assert float(loss) == float(ref.loss)
    assert torch.equal(grad, logp.grad)
    assert metrics["actor/ticgrpo/clip_ratio/high"] == ref.metrics["clip_ratio/high"]


def test_normalisers_from_global_batch_info():
    mask = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 0, 0]], dtype=torch.bool)
    assert plugin.normalisers({}, None, mask) == {"num_seqs": 2.0, "num_tokens": 3.0}
    info = {"dp_size": 4, "batch_num_tokens": 100, "global_batch_size": 32,
            "loss_scale_factor": 512}  # fmt: skip
    assert plugin.normalisers(info, None, mask) == {
        "num_seqs": 8.0, "num_tokens": 25.0, "max_len": 512.0}  # fmt: skip
    assert plugin.normalisers({"loss_scale_factor": None}, 256, mask)["max_len"] == 256.0


def test_clear_errors():
    logp, old, adv, mask, _ = _tensors(0.1, seed=1)
    kw = dict(old_log_prob=old, log_prob=logp, advantages=adv, response_mask=mask)
    with pytest.raises(ValueError, match="loss_agg_mode=seq-mean-token-mean"):
        get_policy_loss_fn("ticgrpo_grpo")(loss_agg_mode="token-mean",
                                           config=_config("token-mean", 0.2, 0.2, None), **kw)  # fmt: skip
    with pytest.raises(ValueError, match="loss_scale_factor"):
        get_policy_loss_fn("ticgrpo_tic_grpo")(
            loss_agg_mode="seq-mean-token-sum-norm",
            config=_config("seq-mean-token-sum-norm", 0.2, 0.2, None), **kw)  # fmt: skip
    gae = adv + 0.1 * torch.arange(T)[None] * mask
    with pytest.raises(ValueError, match="one advantage per response"):
        get_policy_loss_fn("ticgrpo_grpo")(
            old_log_prob=old, log_prob=logp, advantages=gae, response_mask=mask,
            loss_agg_mode="seq-mean-token-mean",
            config=_config("seq-mean-token-mean", 0.2, 0.2, None))  # fmt: skip


def test_version_gate():
    plugin.check_verl_version("0.9.1")
    plugin.check_verl_version("0.7.1")
    for bad in ("0.6.1", "0.10.0"):
        with pytest.raises(ImportError, match=r"supports verl>=0\.7\.1,<0\.10\.0"):
            plugin.check_verl_version(bad)


DOC = Path(__file__).resolve().parents[2] / "docs" / "INTEGRATIONS.md"


def _doc_overrides() -> list[str]:
    """The ``key=value`` overrides of the docs' verl command line."""
    block = DOC.read_text().split("python -m verl.trainer.main_ppo", 1)[1].split("```", 1)[0]
    return [tok for tok in block.split() if "=" in tok]


def test_docs_command_line_selects_our_tic_grpo_in_verls_config():
    """The overrides docs/INTEGRATIONS.md tells users to add, composed into verl's own Hydra
    config (ppo_trainer.yaml) and turned into its ActorConfig, select a loss that equals
    ticgrpo.policy_loss(method="tic_grpo") with T = data.max_response_length."""
    from hydra import compose, initialize_config_dir
    from verl.utils.config import omega_conf_to_dataclass

    overrides = _doc_overrides()
    assert "actor_rollout_ref.actor.policy_loss.loss_mode=ticgrpo_tic_grpo" in overrides
    # what every verl run sets anyway (the docs' "..."): a micro-batch size
    overrides += ["actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2"]
    config_dir = str(Path(verl.__file__).parent / "trainer" / "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        cfg = compose("ppo_trainer", overrides=overrides)
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    budget = cfg.data.max_response_length
    assert actor.loss_scale_factor == budget

    logp, old, adv, mask, _ = _tensors(0.1, seed=3)
    fn = get_policy_loss_fn(actor.policy_loss.loss_mode)
    loss, grad, _ = _value_grad(fn, logp, old_log_prob=old, advantages=adv, response_mask=mask,
                                loss_agg_mode=actor.loss_agg_mode, config=actor)  # fmt: skip
    logp.grad = None
    ref = ticgrpo.policy_loss(logp, old, adv[:, 0], mask, method="tic_grpo",
                              eps_low=actor.clip_ratio_low, eps_high=actor.clip_ratio_high,
                              num_seqs=5, max_len=budget)  # fmt: skip
    ref.loss.backward()
    assert float(loss) == float(ref.loss)
    assert torch.equal(grad, logp.grad)


def test_docs_table_gives_each_methods_loss_agg_mode():
    rows = {}
    for line in DOC.read_text().splitlines():
        if line.startswith("| `ticgrpo_"):
            names, mode = line.split("|")[1:3]
            for name in names.split(","):
                rows[name.strip().strip("`")] = mode.strip().strip("`")
    assert rows == {f"ticgrpo_{m}": plugin.verl_agg_mode(m) for m in ticgrpo.METHODS}
