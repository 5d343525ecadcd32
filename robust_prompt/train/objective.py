"""The training objective, assembled in one place: CE + lambda_sim * alignment + lambda_kl * KL.

    loss = CE(targets of every member)
         + lambda_sim * alignment(pooled encoder representations within each group)
         + lambda_kl  * KL(p_anchor || p_member)   (anchor held fixed)

With both lambdas at 0 this is plain prompt tuning (Lester et al., 2021). The model is frozen:
only the `[P, H]` prompt is an argument to differentiate. Every term (weighted and unweighted)
is returned in the metrics, which the loop logs.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from robust_prompt.model import scoring
from robust_prompt.model.prompted import POOLINGS, PromptedModel
from robust_prompt.train import losses

ALIGNMENTS = ("cosine", "info_nce")
KL_OVER = ("auto", "tokens")


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Weights and choices of the objective (gin: `losses.*`).

  Attributes:
    lambda_sim: weight of the representation alignment term.
    lambda_kl: weight of the KL(anchor || member) term.
    alignment: "cosine" (distance to the group mean) or "info_nce" (other groups of the
      (micro)batch are the negatives).
    temperature: InfoNCE temperature tau.
    pooling: the pooled representation (`PromptedModel.represent`): masked mean over "input"
      (input tokens only; the default: prompt positions shared by every row would make unrelated
      inputs look alike), "mean" (prompt and input tokens), "prompt" (prompt positions only) or
      "last" (the last input position).
    kl_over: "auto" (over the answer options for multiple choice, over target tokens otherwise)
      or "tokens" (always over the target tokens' vocabulary distributions).
  """

  lambda_sim: float = 0.0
  lambda_kl: float = 0.0
  alignment: str = "cosine"
  temperature: float = 0.1
  pooling: str = "input"
  kl_over: str = "auto"

  def __post_init__(self):
    for name, value, allowed in (
      ("alignment", self.alignment, ALIGNMENTS),
      ("pooling", self.pooling, POOLINGS),
      ("kl_over", self.kl_over, KL_OVER),
    ):
      if value not in allowed:
        raise ValueError(f"losses.{name} must be one of {allowed}; got {value!r}")
    if self.lambda_sim < 0 or self.lambda_kl < 0:
      raise ValueError(f"loss weights must be >= 0; got {self.lambda_sim}, {self.lambda_kl}")
    if self.temperature <= 0:
      raise ValueError(f"losses.temperature must be > 0; got {self.temperature}")


# Metrics that are counts: summed over microbatches, where every other metric is averaged.
COUNT_METRICS = ("option_hits", "option_rows")


def finish_metrics(metrics: dict) -> dict:
  """Adds the ratios computed from count metrics (`option_accuracy = option_hits / option_rows`)."""
  if "option_hits" in metrics:
    metrics = dict(metrics)
    metrics["option_accuracy"] = metrics["option_hits"] / jnp.maximum(metrics["option_rows"], 1.0)
  return metrics


def compute_loss(
  prompt: jax.Array, frozen_params, batch: dict, *, model: PromptedModel, config: LossConfig
):
  """The objective for one (micro)batch of grouped rows.

  Args:
    prompt: `[P, H]` the soft prompt (the only trained value).
    frozen_params: the model's parameter tree (not differentiated).
    batch: see `grouping.GroupedData.batch`: input_ids/input_mask `[B, T]`,
      target_ids/target_mask `[B, S]`, group_ids/is_anchor/answer `[B]`, and optionally
      option_ids/option_mask `[B, O, S_opt]`.
    model: the prompted model; the input runs once (`context`) for every term.
    config: loss weights and choices.

  Returns:
    `(loss, metrics)`; metrics hold every term, weighted (`w_*`) and unweighted.
  """
  context = model.context(frozen_params, prompt, batch)
  target_ids, target_mask = batch["target_ids"], batch["target_mask"]
  logits = model.logits(frozen_params, prompt, batch, context=context)
  ce, metrics = losses.token_cross_entropy(scoring.token_log_probs(logits, target_ids), target_mask)
  total = ce
  group_ids, is_anchor = batch["group_ids"], batch["is_anchor"]

  if config.lambda_sim > 0:
    reps = model.represent(frozen_params, prompt, batch, pooling=config.pooling, context=context)
    if config.alignment == "cosine":
      align, m = losses.cosine_alignment(reps, group_ids)
    else:
      align, m = losses.info_nce_alignment(reps, group_ids, config.temperature)
    metrics.update(m)
    metrics["w_align"] = config.lambda_sim * align
    total = total + config.lambda_sim * align

  if config.lambda_kl > 0:
    token_valid = target_mask
    kl = 0.0
    if config.kl_over == "auto" and "option_ids" in batch:
      option_mask = batch["option_mask"]
      option_valid = (option_mask.sum(-1) > 0).astype(jnp.int32)  # [B, O]
      has_options = option_valid.max(-1)  # [B]
      scores = model.option_log_probs(frozen_params, prompt, batch, mode="sum", context=context)
      option_lp = losses.option_log_probs(scores, option_valid)
      kl_opt, _ = losses.kl_from_anchor(option_lp, has_options, group_ids, is_anchor)
      kl = kl + kl_opt
      metrics["kl_options"] = kl_opt
      hit = (jnp.argmax(option_lp, -1) == batch["answer"]) * has_options
      # Counts, not only their ratio: microbatches differ in how many rows have options, so
      # accumulation sums these and recomputes the ratio (`finish_metrics`).
      metrics["option_hits"] = hit.sum().astype(jnp.float32)
      metrics["option_rows"] = has_options.sum().astype(jnp.float32)
      metrics = finish_metrics(metrics)
      token_valid = target_mask * (1 - has_options)[:, None]
    # Rows without options: KL between the vocabulary distributions at every target position.
    token_lp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    kl_tok, _ = losses.kl_from_anchor(token_lp, token_valid, group_ids, is_anchor)
    kl = kl + kl_tok
    metrics["kl_tokens"] = kl_tok
    metrics["kl"] = kl
    metrics["w_kl"] = config.lambda_kl * kl
    total = total + config.lambda_kl * kl

  metrics["loss"] = total
  return total, metrics
