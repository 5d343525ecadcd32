"""Greedy decoding over a precomputed encoder output, and exact-match scoring of generations.

Used for generative tasks (BIG-bench examples with a `target` instead of `target_scores`) and by
the `greedy_prefix` score mode of rank classification, which needs the per-step distributions of
the greedy decode (not only its tokens).

Decoding uses the model's KV cache (`T5.decode(..., decode=True)`): the encoder output is
projected into cross-attention keys/values once, and each step feeds one token.
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp

from robust_prompt.model.t5 import T5

EOS_ID = 1
PAD_ID = 0


def greedy_decode(model: T5, params, encoded, encoder_mask, num_steps: int, *, option_ids=None):
  """Greedy decoding of `num_steps` tokens with the KV cache; optionally scores option tokens.

  Step `k` conditions on the greedy prefix `g_<k` (decoder start token first). After a row
  emitted EOS its later tokens are PAD (0), as Hugging Face `generate` writes them (and feeds
  them back). The first step fills the cache (cross-attention keys/values of the encoder output,
  projected once); each later step feeds one token (`lax.scan`, one compilation for all steps).

  Args:
    model: the T5 module; params: its parameter tree.
    encoded: `[B, T, H]` encoder output; encoder_mask: `[B, T]`.
    num_steps: number of tokens to generate (static).
    option_ids: optional `[B, O, S] int32` with `S >= num_steps`: option tokens whose
      log-probability under each step's distribution is returned.

  Returns:
    `(tokens [B, num_steps] int32, option_step_log_probs [B, O, num_steps] float32 or None)`.
  """
  b = encoded.shape[0]
  with_options = option_ids is not None
  if with_options:
    option_ids = option_ids[:, :, :num_steps]

  def decode(cache, token, enc):
    variables = {"params": params} if cache is None else {"params": params, "cache": cache}
    logits, state = model.apply(
      variables,
      enc,
      encoder_mask,
      token[:, None],
      None,
      decode=True,
      max_decode_len=num_steps,
      method=T5.decode,
      mutable=["cache"],
    )
    return logits[:, 0], state["cache"]  # [B, V]

  def pick(step_logits, finished, k):
    token = jnp.argmax(step_logits, axis=-1).astype(jnp.int32)  # [B]; first max on ties
    token = jnp.where(finished, PAD_ID, token)
    picked = None
    if with_options:
      log_probs = jax.nn.log_softmax(step_logits.astype(jnp.float32), axis=-1)
      want = jax.lax.dynamic_index_in_dim(option_ids, k, axis=2, keepdims=False)  # [B, O]
      picked = jnp.take_along_axis(log_probs, want, axis=-1)  # [B, O]
    return token, finished | (token == EOS_ID), picked

  start = jnp.full((b,), model.config.decoder_start_token_id, jnp.int32)
  logits, cache = decode(None, start, encoded)
  token, finished, picked = pick(logits, jnp.zeros((b,), bool), 0)

  def step(carry, k):
    cache, token, finished = carry
    # `encoded` is not read once the cross-attention cache is filled.
    logits, cache = decode(cache, token, None)
    token, finished, picked = pick(logits, finished, k)
    return (cache, token, finished), (token, picked)

  tokens, picks = [token[:, None]], [picked]
  if num_steps > 1:
    _, (rest, rest_picked) = jax.lax.scan(step, (cache, token, finished), jnp.arange(1, num_steps))
    tokens.append(rest.T)  # [B, num_steps - 1]
    picks.append(rest_picked)
  tokens = jnp.concatenate(tokens, axis=1)
  if not with_options:
    return tokens, None
  out = picked[:, :, None]
  if num_steps > 1:
    out = jnp.concatenate([out, jnp.transpose(picks[1], (1, 2, 0))], axis=2)
  return tokens, out


@functools.lru_cache(maxsize=32)
def make_generator(model: T5, num_steps: int, *, out_shardings=None):
  """A jitted `(params, input_ids, input_mask, prompt) -> tokens [B, num_steps]` (cached).

  The encoder runs once (with the optional `[P, H]` soft prompt before the inputs), then
  `greedy_decode`. Compiles once per (B, T) bucket.
  """
  from robust_prompt.eval.rank import encode_inputs

  def fn(params, input_ids, input_mask, prompt):
    encoded, mask = encode_inputs(model, params, input_ids, input_mask, prompt)
    tokens, _ = greedy_decode(model, params, encoded, mask, num_steps)
    return tokens

  return jax.jit(fn, out_shardings=out_shardings)


def strip_after_eos(tokens) -> list[int]:
  """The generated ids before the first EOS (EOS and padding dropped)."""
  out = []
  for t in tokens:
    t = int(t)
    if t == EOS_ID:
      break
    if t != PAD_ID:
      out.append(t)
  return out


_SPACE = re.compile(r"\s+")


def normalize_answer(text: str) -> str:
  """Exact-match normalisation: strip, lowercase, collapse runs of whitespace."""
  return _SPACE.sub(" ", text.strip().lower())


def exact_match(prediction: str, references) -> bool:
  """True when the normalised prediction equals any normalised reference."""
  pred = normalize_answer(prediction)
  return any(pred == normalize_answer(r) for r in references)
