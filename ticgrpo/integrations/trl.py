"""TRL drop-in: a ``GRPOTrainer`` whose loss is ``ticgrpo.policy_loss`` for any row of ``METHODS``.

    from ticgrpo.integrations.trl import TicGRPOConfig, TicGRPOTrainer

    args = TicGRPOConfig(method="tic_grpo", epsilon_high=0.2, max_completion_length=1024, ...)
    trainer = TicGRPOTrainer(model=..., reward_funcs=..., args=args, train_dataset=...)

Everything but the loss is TRL's: generation (vLLM or transformers), rewards, advantages,
reference model, gradient accumulation, several processes, logging. ``method`` replaces TRL's
``loss_type`` / ``importance_sampling_level`` (those two are ignored, apart from a check that
``importance_sampling_level`` is left at "token": the method's row fixes the ratio level).

TRL's normalisation conventions, as ``policy_loss``'s explicit normalisers (one micro-batch of
``B`` sequences, ``GA`` = ``current_gradient_accumulation_steps`` in training, 1 in evaluation):

- ``num_seqs = B·GA``: a per-sequence mean over the accumulation window, averaged over processes
  by DDP (TRL's ``grpo``: ``mean_i ℓ_i / GA``);
- ``num_tokens = num_items_in_batch / num_processes · GA / steps_per_generation``: the tokens of
  the accumulation window, as TRL's ``dapo`` divides by;
- ``max_len = max_completion_length``: the length budget ``T`` (TRL's ``dr_grpo``; the ``1/T`` of
  TIC-GRPO and GRPO₂).

Also passed through: ``old_per_token_logps`` when TRL reuses a rollout (else the detached current
log-probs: ratio 1), ``β`` with ``ref_per_token_logps`` (TRL's k3 estimator), the completion mask
times TRL's ``tool_mask``, and TRL's vLLM importance correction ``importance_sampling_ratio``
(``[B, T]`` or ``[B, 1]``) as ``token_weights`` — the factor TRL multiplies each token's policy term
by. Our metrics go into TRL's log as ``ticgrpo/<name>`` (mean over processes; names ending in
``min`` / ``max`` take the min / max).

TRL has no loss hook, so this rests on two private methods of ``GRPOTrainer``, whose code is
identical in every version of ``SUPPORTED_TRL`` (checked by diffing the releases):
``_compute_loss(model, inputs)`` (overridden) and ``_get_per_token_logps_and_entropies`` (called),
and on the keys of the ``inputs`` dict that ``_generate_and_score_completions`` builds.
Importing this module with a TRL outside ``SUPPORTED_TRL`` raises ``ImportError``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from packaging.version import Version

from ticgrpo import METHODS, TIC_CLIP_READINGS, policy_loss
from ticgrpo.kl import KL_ESTIMATORS

#: TRL versions whose ``GRPOTrainer._compute_loss`` this module reproduces: [low, high).
SUPPORTED_TRL = ("1.10.0", "1.17.0")


def check_trl_version(version: str) -> None:
    """Raise ``ImportError`` unless ``version`` is in ``SUPPORTED_TRL``."""
    low, high = (Version(v) for v in SUPPORTED_TRL)
    if not low <= Version(version) < high:
        raise ImportError(
            f"ticgrpo.integrations.trl supports trl>={low},<{high} (it overrides the private "
            f"GRPOTrainer._compute_loss of those releases); found trl {version}. Install a "
            f'supported one: pip install "ticgrpo[trl]"'
        )


try:
    import trl
except ImportError as e:
    raise ImportError('ticgrpo.integrations.trl needs TRL: pip install "ticgrpo[trl]"') from e
check_trl_version(trl.__version__)

from trl import GRPOConfig, GRPOTrainer  # noqa: E402

#: The keyword arguments of ``_get_per_token_logps_and_entropies`` that TRL fills from ``inputs``
#: (multimodal models); passed through unchanged.
_FORWARD_KEYS = (
    "pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes",
    "num_tiles", "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids",
)  # fmt: skip


@dataclass
class TicGRPOConfig(GRPOConfig):
    """``GRPOConfig`` plus the estimator. The clip widths are TRL's ``epsilon`` (``ε_low``) and
    ``epsilon_high`` (``ε_high``); set them to the method's (``ticgrpo.METHODS[m].eps_low`` /
    ``eps_high``: GSPO's are 3e-4 / 4e-4, DAPO's 0.2 / 0.28)."""

    method: str = field(
        default="tic_grpo",
        metadata={"help": f"ticgrpo estimator, a key of ticgrpo.METHODS: {sorted(METHODS)}."},
    )
    tic_clip: str | None = field(
        default=None,
        metadata={"help": f"tic_grpo only: reading of the upper clip, {list(TIC_CLIP_READINGS)}."},
    )
    kl_estimator: str = field(
        default="k3",
        metadata={"help": f"per-token KL estimator when beta > 0, one of {KL_ESTIMATORS}."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.method not in METHODS:
            raise ValueError(
                f"TicGRPOConfig.method {self.method!r} is not a ticgrpo method; "
                f"expected one of {sorted(METHODS)}"
            )
        if self.tic_clip is not None and self.method != "tic_grpo":
            raise ValueError(
                f"TicGRPOConfig.tic_clip applies to tic_grpo only, not {self.method!r}"
            )
        if self.tic_clip is not None and self.tic_clip not in TIC_CLIP_READINGS:
            raise ValueError(
                f"TicGRPOConfig.tic_clip {self.tic_clip!r}; expected one of {list(TIC_CLIP_READINGS)}"
            )
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(
                f"TicGRPOConfig.kl_estimator {self.kl_estimator!r}; expected one of {KL_ESTIMATORS}"
            )
        unsupported = {
            "importance_sampling_level": (self.importance_sampling_level != "token",
                                          "the method's row fixes the ratio level (GSPO: method='gspo')"),
            "use_bias_correction_kl": (self.beta != 0.0 and self.use_bias_correction_kl,
                                       "ticgrpo's KL term is not importance-weighted; set it False"),
            "delta": (self.delta is not None, "two-sided-clip delta is not part of ticgrpo's surrogates"),
            "top_entropy_quantile": (self.top_entropy_quantile < 1.0, "entropy masking"),
            "off_policy_mask_threshold": (self.off_policy_mask_threshold is not None,
                                          "off-policy sequence masking"),
            "entropy_coef": (self.entropy_coef != 0.0 or self.use_adaptive_entropy, "entropy bonus"),
        }  # fmt: skip
        bad = [f"{k} ({why})" for k, (on, why) in unsupported.items() if on]
        if bad:
            raise ValueError(
                f"TicGRPOConfig: TRL options not supported with a ticgrpo method: {', '.join(bad)}"
            )


def trl_normalisers(
    batch_size: int,
    grad_accum: int,
    num_items_in_batch: float,
    num_processes: int,
    steps_per_generation: int,
    max_completion_length: int,
    training: bool,
) -> dict[str, float]:
    """``policy_loss``'s ``num_seqs`` / ``num_tokens`` / ``max_len`` under TRL's conventions for
    one micro-batch (module docstring); in evaluation there is no accumulation."""
    ga = grad_accum if training else 1
    num_tokens = max(float(num_items_in_batch), 1.0) / num_processes
    if training:
        num_tokens = num_tokens * ga / steps_per_generation
    return {
        "num_seqs": float(batch_size * ga),
        "num_tokens": num_tokens,
        "max_len": float(max_completion_length),
    }


class TicGRPOTrainer(GRPOTrainer):
    """TRL's ``GRPOTrainer`` with ``ticgrpo.policy_loss`` as the loss (module docstring)."""

    def __init__(self, *args, **kwargs):
        config = kwargs.get("args")
        if not isinstance(config, TicGRPOConfig):
            raise TypeError(
                f"TicGRPOTrainer needs args=TicGRPOConfig(...), got {type(config).__name__}"
            )
        super().__init__(*args, **kwargs)

    def _compute_loss(self, model, inputs):
        """Overrides TRL's private ``GRPOTrainer._compute_loss(model, inputs)``: the loss of one
        micro-batch, scaled for accumulation as TRL's (see ``trl_normalisers``)."""
        args: TicGRPOConfig = self.args
        completion_ids = inputs["completion_ids"]
        input_ids = torch.cat([inputs["prompt_ids"], completion_ids], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        mask = mask.bool()  # [B, T]

        logp, entropies, aux_loss = self._get_per_token_logps_and_entropies(
            model,
            input_ids,
            attention_mask,
            completion_ids.size(1),
            compute_entropy=True,
            compute_aux_loss=self.aux_loss_enabled,
            **{k: inputs.get(k) for k in _FORWARD_KEYS},
        )  # [B, T] each; aux_loss scalar or None
        advantages = inputs["advantages"]
        if advantages.dim() != 1:
            raise ValueError(
                "TicGRPOTrainer: ticgrpo methods take one advantage per sequence ([B]); got "
                f"advantages of shape {tuple(advantages.shape)}"
            )
        old = inputs.get("old_per_token_logps")
        old = logp.detach() if old is None else old

        training = self.model.training
        ga = self.current_gradient_accumulation_steps if training else 1
        options = trl_normalisers(
            batch_size=logp.size(0),
            grad_accum=ga,
            num_items_in_batch=float(inputs["num_items_in_batch"]),
            num_processes=self.accelerator.num_processes,
            steps_per_generation=args.steps_per_generation,
            max_completion_length=args.max_completion_length,
            training=training,
        )
        if self.beta != 0.0:
            options.update(beta=self.beta, ref_logp=inputs["ref_per_token_logps"],
                           kl_estimator=args.kl_estimator)  # fmt: skip
        if args.tic_clip is not None:
            options["tic_clip"] = args.tic_clip
        if self.use_vllm and self.vllm_importance_sampling_correction:
            options["token_weights"] = inputs["importance_sampling_ratio"].expand_as(logp)
        out = policy_loss(logp, old, advantages, mask, method=args.method,
                          eps_low=self.epsilon_low, eps_high=self.epsilon_high, **options)  # fmt: skip
        loss = out.loss

        mode = "train" if training else "eval"
        if self.aux_loss_enabled:  # as TRL: the MoE router loss, scaled for accumulation
            loss = loss + self.router_aux_loss_coef * aux_loss / ga
            self._metrics[mode]["aux_loss"].append(
                self.accelerator.gather_for_metrics(aux_loss).mean().item()
            )
        self._log_ticgrpo_metrics(mode, out.metrics, entropies, mask)
        return loss

    def _log_ticgrpo_metrics(self, mode, metrics, entropies, mask) -> None:
        """``ticgrpo/<name>`` for each metric of ``policy_loss`` (reduced over processes) and
        TRL's own ``entropy`` (masked mean over every process's tokens)."""
        keys = sorted(metrics)
        local = torch.tensor([metrics[k] for k in keys], device=entropies.device)
        gathered = self.accelerator.gather(local[None]).reshape(-1, len(keys))  # [P, K]
        for j, key in enumerate(keys):
            col = gathered[:, j]
            last = key.replace("/", "_").rsplit("_", 1)[-1]  # ".../token_min" -> "min"
            value = {"min": col.min, "max": col.max}.get(last, col.mean)()
            self._metrics[mode][f"ticgrpo/{key}"].append(value.item())
        m = mask.to(entropies.dtype)
        totals = self.accelerator.reduce(torch.stack([(entropies * m).sum(), m.sum()]), "sum")
        self._metrics[mode]["entropy"].append((totals[0] / totals[1].clamp(min=1.0)).item())
