"""verl drop-in: every row of ``ticgrpo.METHODS`` in verl's policy-loss registry.

Importing this module registers ``ticgrpo_<method>`` (``ticgrpo_tic_grpo``, ``ticgrpo_grpo``, …)
with ``verl.trainer.ppo.core_algos.register_policy_loss``; verl imports it by itself through the
``verl.plugins`` entry point that ticgrpo's package declares (or name it in
``VERL_USE_EXTERNAL_MODULES=ticgrpo.integrations.verl``). Select one with
``actor_rollout_ref.actor.policy_loss.loss_mode=ticgrpo_tic_grpo``; docs/INTEGRATIONS.md gives
the whole command line.

What each registered function does with verl's arguments (``PolicyLossFn``:
``old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config, rollout_is_weights``):

- clip widths: ``config.clip_ratio_low`` / ``clip_ratio_high`` (``clip_ratio`` where unset);
- advantages ``[N, T]``: verl broadcasts one per sequence over its response tokens; we take that
  value, and refuse advantages that vary within a response (GAE: not a GRPO-family estimator);
- aggregation: the method's own (its row), never silently another: ``loss_agg_mode`` must be the
  verl name of that aggregation (``VERL_AGG_MODE``), else a ``ValueError`` says which to set;
- normalisers from ``config.global_batch_info`` as verl's ``agg_loss`` uses them, so the loss of
  one micro-batch on one rank is on verl's scale (ranks averaged by FSDP, micro-batches summed):
  ``num_seqs = global_batch_size / dp_size``, ``num_tokens = batch_num_tokens / dp_size``,
  ``max_len = loss_scale_factor`` (the length budget ``T``: required for the methods whose
  normaliser is ``T``); with no global info (one process, legacy path), the micro-batch's own
  count of non-empty responses and of tokens, as ``agg_loss`` falls back to;
- ``rollout_is_weights`` (verl's rollout-vs-trainer correction) → ``token_weights``.

It relies on verl's public registry and on three of its config fields (``global_batch_info``,
``loss_scale_factor``, ``clip_ratio_*``), present from verl 0.7.1 (``SUPPORTED_VERL``).
"""

from __future__ import annotations

from typing import Any

import torch
from packaging.version import Version

from ticgrpo import METHODS, policy_loss

#: verl versions with ``config.global_batch_info`` and this ``agg_loss``: [low, high).
SUPPORTED_VERL = ("0.7.1", "0.10.0")

#: verl's ``loss_agg_mode`` → our aggregation (``ticgrpo.AGGREGATIONS``). ``token-sum`` (no
#: normaliser) has no ticgrpo counterpart.
AGGREGATION_OF_MODE = {
    "token-mean": "token_mean",
    "seq-mean-token-mean": "seq_mean_token_mean",
    "seq-mean-token-sum": "seq_mean_token_sum",
    "seq-mean-token-sum-norm": "token_sum_over_constant",
}


def check_verl_version(version: str) -> None:
    """Raise ``ImportError`` unless ``version`` is in ``SUPPORTED_VERL``."""
    low, high = (Version(v) for v in SUPPORTED_VERL)
    if not low <= Version(version) < high:
        raise ImportError(
            f"ticgrpo.integrations.verl supports verl>={low},<{high} (it reads "
            f"ActorConfig.global_batch_info); found verl {version}"
        )


def verl_agg_mode(method: str) -> str:
    """The ``loss_agg_mode`` a verl run must set for ``method``: the verl name of the row's
    aggregation; a row whose normaliser verl cannot name (TIC-GRPO's ``(1/T)·mean_i``) maps to
    ``seq-mean-token-sum-norm``, verl's "mean over sequences, divided by loss_scale_factor"."""
    agg = METHODS[method].aggregation
    for mode, ours in AGGREGATION_OF_MODE.items():
        if ours == agg:
            return mode
    return "seq-mean-token-sum-norm"


def normalisers(
    global_batch_info: dict, loss_scale_factor: int | None, response_mask: torch.Tensor
) -> dict[str, float]:
    """``policy_loss``'s ``num_seqs`` / ``num_tokens`` / ``max_len`` for one micro-batch
    (``response_mask`` ``[N, T]`` bool) from verl's global batch info (module docstring)."""
    info = {k: v for k, v in (global_batch_info or {}).items() if v is not None}
    dp = float(info.get("dp_size", 1))
    if "global_batch_size" in info:
        num_seqs = float(info["global_batch_size"]) / dp
    else:
        num_seqs = float(max(int(response_mask.any(dim=1).sum()), 1))
    if "batch_num_tokens" in info:
        num_tokens = float(info["batch_num_tokens"]) / dp
    else:
        num_tokens = float(max(int(response_mask.sum()), 1))
    out = {"num_seqs": num_seqs, "num_tokens": num_tokens}
    scale = info.get("loss_scale_factor", loss_scale_factor)
    if scale is not None:
        out["max_len"] = float(scale)
    return out


def sequence_advantages(advantages: torch.Tensor, mask: torch.Tensor, name: str) -> torch.Tensor:
    """``[N]`` from verl's ``[N, T]`` advantages (one value broadcast over each response's tokens,
    0 where masked): the value at each response's first token (0 for an empty response);
    ``ValueError`` when they vary within a response."""
    if advantages.dim() == 1:
        return advantages
    first = mask.int().argmax(dim=1, keepdim=True)  # [N, 1] first response token
    adv = advantages.gather(1, first)[:, 0] * mask.any(dim=1)  # [N]
    spread = torch.where(mask, (advantages - adv[:, None]).abs(), 0.0)
    if bool((spread > 1e-6 * (1 + adv.abs()[:, None])).any()):
        raise ValueError(
            f"{name}: ticgrpo methods take one advantage per response; these vary within a "
            f"response by up to {float(spread.max()):.3g} (a token-level estimator such as GAE?)"
        )
    return adv


def make_policy_loss(method: str):
    """verl ``PolicyLossFn`` computing ``ticgrpo.policy_loss(method=method)``; returns
    ``(loss, metrics)`` with verl's ``actor/pg_clipfrac``, ``actor/ppo_kl``,
    ``actor/pg_clipfrac_lower`` and ours as ``actor/ticgrpo/<name>``."""
    name = f"ticgrpo_{method}"
    mode = verl_agg_mode(method)

    def loss_fn(
        old_log_prob: torch.Tensor,
        log_prob: torch.Tensor,
        advantages: torch.Tensor,
        response_mask: torch.Tensor,
        loss_agg_mode: str = "token-mean",
        config: Any = None,
        rollout_is_weights: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        if config is None:
            raise ValueError(f"{name}: verl passed no actor config")
        if loss_agg_mode != mode:
            raise ValueError(
                f"{name} aggregates as {METHODS[method].aggregation!r}; set "
                f"actor_rollout_ref.actor.loss_agg_mode={mode} (got {loss_agg_mode!r})"
            )
        mask = response_mask.bool()
        options = normalisers(
            getattr(config, "global_batch_info", None), config.loss_scale_factor, mask
        )
        if METHODS[method].needs_max_len and "max_len" not in options:
            raise ValueError(
                f"{name} divides by the length budget T: set "
                "actor_rollout_ref.actor.loss_scale_factor=<data.max_response_length>"
            )
        if rollout_is_weights is not None:
            options["token_weights"] = rollout_is_weights
        eps = config.clip_ratio
        eps_low = config.clip_ratio_low if config.clip_ratio_low is not None else eps
        eps_high = config.clip_ratio_high if config.clip_ratio_high is not None else eps
        adv = sequence_advantages(advantages, mask, name)  # [N]
        out = policy_loss(log_prob, old_log_prob, adv, mask, method=method,
                          eps_low=eps_low, eps_high=eps_high, **options)  # fmt: skip
        m = out.metrics
        metrics = {
            "actor/pg_clipfrac": m["clip_ratio/region"],
            "actor/pg_clipfrac_lower": m["clip_ratio/low"],
            "actor/ppo_kl": -m["log_ratio/token_mean"],
        }
        metrics.update({f"actor/ticgrpo/{k}": v for k, v in m.items()})
        return out.loss, metrics

    loss_fn.__name__ = loss_fn.__qualname__ = f"compute_policy_loss_{name}"
    loss_fn.__doc__ = f"ticgrpo.policy_loss(method={method!r}) as a verl policy loss ({name})."
    return loss_fn


def register_all() -> list[str]:
    """Register ``ticgrpo_<method>`` for every row of ``METHODS``; the names registered."""
    from verl.trainer.ppo.core_algos import register_policy_loss

    names = []
    for method in METHODS:
        register_policy_loss(f"ticgrpo_{method}")(make_policy_loss(method))
        names.append(f"ticgrpo_{method}")
    return names


try:
    import verl
except ImportError as e:
    raise ImportError("ticgrpo.integrations.verl needs verl: see docs/INTEGRATIONS.md") from e
check_verl_version(verl.__version__)
REGISTERED = register_all()
