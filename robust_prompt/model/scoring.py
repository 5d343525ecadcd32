"""Teacher-forced scoring of target sequences, option scores and the greedy-prefix rule.

The numerics behind `PromptedT5`'s `target_scores` and `option_log_probs` (`prompted_t5.py`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from robust_prompt.model import option_layout
from robust_prompt.model.t5 import T5

Array = jax.Array

# The original robustness study generated at most 32 new tokens, which bounds how many option
# tokens `greedy_prefix` compares (see `eval/rank.py`).
GREEDY_PREFIX_MAX_STEPS = 32


def shift_right(targets: Array, start_id: int = 0) -> Array:
  """targets: [B, S] -> decoder inputs [B, S]: `start_id` then `targets[:, :-1]` (as HF T5).

  Padding inside the targets (id 0) stays 0, which equals T5's decoder start id; HF replaces label
  -100s by the pad id in the same way.
  """
  targets = jnp.asarray(targets)
  start = jnp.full((targets.shape[0], 1), start_id, dtype=targets.dtype)
  return jnp.concatenate([start, targets[:, :-1]], axis=1)


def token_log_probs(logits: Array, targets: Array) -> Array:
  """logits: [B, S, V] float, targets: [B, S] int -> log p(target) [B, S] float32.

  Uses `logit[target] - logsumexp(logits)` so the [B, S, V] log-softmax is never materialised.
  """
  logits = logits.astype(jnp.float32)
  target_logit = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
  return target_logit - jax.nn.logsumexp(logits, axis=-1)


def _variables(params: Any) -> Any:
  """Accepts either `{"params": tree}` or the bare tree."""
  if isinstance(params, dict) and "params" in params:
    return params
  return {"params": params}


def score_with_encoded(
  model: T5,
  params: Any,
  encoded: Array,
  encoder_mask: Array,
  target_ids: Array,
  target_mask: Array,
  encoder_index: Array | None = None,
) -> tuple[Array, Array]:
  """Scores targets given precomputed encoder outputs (encode once, score many options).

  Args:
    model: the `T5` module.
    params: `{"params": tree}` or the tree.
    encoded: [B, T, H] encoder outputs.
    encoder_mask: [B, T].
    target_ids: [R, S] int32, each `tokens + [EOS]`, padded with 0.
    target_mask: [R, S] (1 = real target token, EOS included).
    encoder_index: [R] int32 or None (then R = B): target r is scored against input
      `encoder_index[r]`. Prefer it to gathering `encoded[encoder_index]` yourself: same scores,
      but the decoder's cross-attention projects each input's keys/values once, not per target.

  Returns:
    (sum_logprob [R] float32, num_tokens [R] int32).
  """
  target_mask = jnp.asarray(target_mask)
  decoder_input_ids = shift_right(target_ids, model.config.decoder_start_token_id)
  logits = model.apply(
    _variables(params),
    encoded,
    encoder_mask,
    decoder_input_ids,
    target_mask,
    encoder_index=encoder_index,
    method=T5.decode,
  )
  lp = token_log_probs(logits, target_ids)
  weights = target_mask.astype(jnp.float32)
  return jnp.sum(lp * weights, axis=-1), jnp.sum(target_mask.astype(jnp.int32), axis=-1)


def option_log_probs(
  model: T5,
  params: Any,
  encoded: Array,
  encoder_mask: Array,
  option_ids: Array,
  option_mask: Array,
) -> Array:
  """Per-token log-probs of the O options of every input, all options of an input in ONE row.

  The options are laid out as a tree (`option_layout.shared_start_layout`): the start position,
  which every option shares, once, then each option's own tokens, attending to the start and to
  their own option only. One decoder row of `L = 1 + O * (S - 1)` positions per input instead of
  O rows of S: cross-attention reads each input once, and the start position's layers and
  full-vocabulary logits are computed once instead of O times. Each option sees exactly what it
  would see in a row of its own (the same scores up to float32 rounding).

  Args:
    model: the `T5` module.
    params: `{"params": tree}` or the tree.
    encoded: `[B, T, H]` encoder outputs; encoder_mask: `[B, T]`.
    option_ids: `[B, O, S] int32` option tokens (EOS included), 0-padded.
    option_mask: `[B, O, S]` 1 for real option tokens (a dummy option is all 0).

  Returns:
    `[B, O, S] float32` log p(y_s | y_<s, x), 0 where `option_mask` is 0.
  """
  _, o, s = option_ids.shape
  layout = option_layout.shared_start_layout(o, s)
  logits = model.apply(
    _variables(params),
    encoded,
    encoder_mask,
    option_layout.decoder_inputs(layout, option_ids, model.config.decoder_start_token_id),
    layout=layout.decoder,
    method=T5.decode,
  )  # [B, L, V]
  lp = option_layout.option_token_log_probs(layout, logits, option_ids)
  return jnp.where(jnp.asarray(option_mask).astype(bool), lp, 0.0)


def greedy_prefix_scores(step_lp: Array, greedy_tokens: Array, option_mask: Array, eos_id: int):
  """The study's `greedy_prefix` score (`eval/rank.py`) from a greedy decode's step log-probs.

  Args:
    step_lp: `[B, O, K]` log p_k(y^o_k) under the greedy prefix (`decoding.greedy_decode`).
    greedy_tokens: `[B, K]` the greedy tokens.
    option_mask: `[B, O, S]` (S >= K).
    eos_id: the EOS id that ends a greedy decode.

  Returns:
    `[B, O] float32`: `sum_{k < n} step_lp[b, o, k]`, `n = min(shortest option, greedy length, 32)`.
  """
  k_steps = step_lp.shape[-1]
  lengths = option_mask.sum(-1)  # [B, O]
  big = jnp.iinfo(jnp.int32).max
  min_len = jnp.min(jnp.where(lengths > 0, lengths, big), axis=-1)  # [B]
  is_eos = greedy_tokens == eos_id
  # Steps generated up to and including the first EOS (all K when none).
  greedy_len = jnp.where(is_eos.any(-1), jnp.argmax(is_eos, axis=-1) + 1, k_steps)
  n = jnp.minimum(jnp.minimum(min_len, greedy_len), GREEDY_PREFIX_MAX_STEPS)  # [B]
  keep = jnp.arange(k_steps)[None, :] < n[:, None]  # [B, K]
  return jnp.sum(jnp.where(keep[:, None, :], step_lp, 0.0), axis=-1)


def reduce_option_log_probs(token_lp: Array, option_mask: Array, mode: str) -> Array:
  """Per-token option log-probs `[B, O, S]` -> `[B, O]` scores: "sum", or "mean" per token."""
  scores = jnp.where(jnp.asarray(option_mask).astype(bool), token_lp, 0.0).sum(-1)
  if mode == "mean":
    scores = scores / jnp.maximum(option_mask.sum(-1), 1).astype(jnp.float32)
  return scores


def mask_dummy_options(scores: Array, option_mask: Array) -> Array:
  """`[B, O]` scores with -inf for dummy options (an all-zero mask: padding of `O`)."""
  return jnp.where(option_mask.sum(-1) > 0, scores, -jnp.inf)
