"""Rank classification: score every answer option of an example against ONE encoder pass.

The encoder runs once per (instruction, example) row, and all `O` options of the row are scored
in ONE decoder row that computes their common start position once (`scoring.option_log_probs`):
no re-encoding per option, unlike a loop of teacher-forced forwards per option (e.g.
lm-evaluation-harness's).

Score modes (`SCORE_MODES`), all log-domain and per option `o` of row `b`:

* `sum` (default): `sum_s log p(y_s | y_<s, x)` over the option's tokens including EOS,
  teacher-forced (the Hugging Face `labels` convention; equals `robust-prompt score`).
* `mean`: the same sum divided by the option's token count (length-normalised).
* `greedy_prefix`: the rule of the original robustness study (Sun et al. 2023, "Evaluating the
  Zero-shot Robustness of Instruction-tuned Language Models", jiudingsun01/InstructionEval,
  `metrics.LogitsMetric.classify`). There the model first decodes greedily (`generate`, at most
  32 new tokens) and the per-step softmax distributions of that *greedy* decode are kept. Option
  `o` (tokenised with EOS) scores `prod_{k < n} p_k(y^o_k)`, where `p_k` is the distribution at
  step `k` conditioned on the GREEDY prefix `g_<k` (not on the option's own prefix) and
  `n = min(min_o len(y^o), len(g), 32)`: only the first `n` tokens are compared, with `n` the
  length of the SHORTEST option of the example (EOS included) and `len(g)` the number of greedy
  steps up to and including the greedy EOS. We return the log of that product,
  `sum_{k < n} log p_k(y^o_k)` (the same ranking, without float underflow). Difference from the
  original: there `len(g)` is the longest greedy decode in the *batch* (generation stops when all
  rows finished); here it is the row's own, i.e. the original with batch size 1, so that results
  do not depend on batching.

Ties: the prediction is the LOWEST option index among the maximal scores (`np.argmax` keeps the
first maximum, as `torch.argmax` did in the original study). Padded (dummy) options score -inf.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from robust_prompt.eval import generate
from robust_prompt.model import scoring
from robust_prompt.model.t5 import T5
from robust_prompt.train.prompt import prepend_prompt

SCORE_MODES = ("sum", "mean", "greedy_prefix")
# The original study generated at most 32 new tokens, which bounds how many option tokens
# `greedy_prefix` can compare.
GREEDY_PREFIX_MAX_STEPS = 32
EOS_ID = 1


def encode_inputs(model: T5, params, input_ids, input_mask, prompt=None):
  """Runs the encoder once, with an optional soft prompt before the input embeddings.

  Args:
    model: the T5 module.
    params: its parameter tree.
    input_ids: `[B, T] int32`.
    input_mask: `[B, T]` 1 for real tokens.
    prompt: optional `[P, H]` soft prompt.

  Returns:
    `(encoded [B, T', H], encoder_mask [B, T'])` with `T' = P + T` when a prompt is given.
  """
  variables = {"params": params}
  if prompt is None:
    encoded = model.apply(variables, input_ids, input_mask, method=T5.encode)
    return encoded, input_mask
  embeds = model.apply(variables, input_ids, method=T5.embed)
  embeds, mask = prepend_prompt(prompt, embeds, input_mask)
  encoded = model.apply(variables, embeds, mask, method=T5.encode_embeds)
  return encoded, mask


def greedy_prefix_scores(step_lp, greedy_tokens, option_mask):
  """Combines greedy-step log-probs into the study's score (see the module docstring).

  Args:
    step_lp: `[B, O, K]` from `generate.greedy_decode(..., option_ids=...)`.
    greedy_tokens: `[B, K]`.
    option_mask: `[B, O, S]` (S >= K).

  Returns:
    `[B, O] float32`: `sum_{k < n} step_lp[b, o, k]`.
  """
  k_steps = step_lp.shape[-1]
  lengths = option_mask.sum(-1)  # [B, O]
  valid = lengths > 0
  big = jnp.iinfo(jnp.int32).max
  min_len = jnp.min(jnp.where(valid, lengths, big), axis=-1)  # [B]
  is_eos = greedy_tokens == EOS_ID
  # Steps generated up to and including the first EOS (all K when none).
  greedy_len = jnp.where(is_eos.any(-1), jnp.argmax(is_eos, axis=-1) + 1, k_steps)
  n = jnp.minimum(jnp.minimum(min_len, greedy_len), GREEDY_PREFIX_MAX_STEPS)  # [B]
  keep = jnp.arange(k_steps)[None, :] < n[:, None]  # [B, K]
  return jnp.sum(jnp.where(keep[:, None, :], step_lp, 0.0), axis=-1)


def option_scores(
  model: T5,
  params,
  input_ids,
  input_mask,
  option_ids,
  option_mask,
  prompt=None,
  *,
  score_mode: str = "sum",
):
  """Scores all options of each row; the encoder runs once per row.

  Args:
    input_ids: `[B, T] int32`; input_mask: `[B, T]`.
    option_ids: `[B, O, S] int32` (EOS included, 0-padded); option_mask: `[B, O, S]`.
      A dummy option (padding of `O`) has an all-zero mask.
    prompt: optional `[P, H]` soft prompt.
    score_mode: one of `SCORE_MODES`.

  Returns:
    `[B, O] float32` scores; -inf for dummy options.
  """
  if score_mode not in SCORE_MODES:
    raise ValueError(f"unknown score mode {score_mode!r}; choose one of {SCORE_MODES}")
  encoded, encoder_mask = encode_inputs(model, params, input_ids, input_mask, prompt)
  if score_mode == "greedy_prefix":
    steps = min(option_ids.shape[-1], GREEDY_PREFIX_MAX_STEPS)
    greedy, step_lp = generate.greedy_decode(
      model, params, encoded, encoder_mask, steps, option_ids=option_ids
    )
    scores = greedy_prefix_scores(step_lp, greedy, option_mask)
  else:
    lp = scoring.option_log_probs(model, params, encoded, encoder_mask, option_ids, option_mask)
    scores = lp.sum(-1)
    if score_mode == "mean":
      scores = scores / jnp.maximum(option_mask.sum(-1), 1).astype(jnp.float32)
  valid = option_mask.sum(-1) > 0
  return jnp.where(valid, scores, -jnp.inf)


@functools.lru_cache(maxsize=32)
def make_option_scorer(model: T5, score_mode: str, *, out_shardings=None) -> Callable:
  """A jitted `(params, input_ids, input_mask, option_ids, option_mask, prompt) -> [B, O]`.

  Compiles once per distinct (B, T, O, S) bucket shape (and prompt presence). Cached per
  (model config, mode, output sharding): parameters are arguments, so evaluators of the same
  architecture share compilations (e.g. a baseline run and a soft-prompt run in one process).
  """
  if score_mode not in SCORE_MODES:
    raise ValueError(f"unknown score mode {score_mode!r}; choose one of {SCORE_MODES}")

  def fn(params, input_ids, input_mask, option_ids, option_mask, prompt):
    return option_scores(
      model, params, input_ids, input_mask, option_ids, option_mask, prompt, score_mode=score_mode
    )

  return jax.jit(fn, out_shardings=out_shardings)


def predict(scores: np.ndarray, num_options: int) -> int:
  """The predicted option: highest score, lowest index on ties (`np.argmax` keeps the first)."""
  return int(np.argmax(np.asarray(scores)[:num_options]))
