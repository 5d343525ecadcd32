"""Greedy decoding with a KV cache (token-for-token equal to HF `generate(num_beams=1)`)."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from robust_prompt.model.t5 import T5

Array = jax.Array


def _variables(params: Any) -> Any:
  if isinstance(params, dict) and "params" in params:
    return params
  return {"params": params}


def greedy_decode(
  model: T5,
  params: Any,
  input_ids: Array,
  input_mask: Array,
  max_decode_len: int,
  *,
  encoded: Array | None = None,
) -> Array:
  """Greedy (argmax) decoding; each row stops at its first EOS and is padded after it.

  Args:
    model: the `T5` module.
    params: `{"params": tree}` or the tree.
    input_ids: [B, T] int32; input_mask: [B, T] (1 = real token).
    max_decode_len: S, the maximum number of generated tokens (EOS included).
    encoded: optional precomputed encoder outputs [B, T, H] (e.g. with a soft prompt; then
      `input_mask` must be the mask of `encoded`).

  Returns:
    [B, S] int32 generated ids (no start token), EOS included, `pad_token_id` after it.
  """
  if encoded is None:
    return _greedy_from_ids(model, _variables(params), input_ids, input_mask, max_decode_len)
  return _greedy_from_encoded(model, _variables(params), encoded, input_mask, max_decode_len)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _greedy_from_ids(model, variables, input_ids, input_mask, max_decode_len):
  encoded = model.apply(variables, input_ids, input_mask, method=T5.encode)
  return _greedy_loop(model, variables, encoded, input_mask, max_decode_len)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _greedy_from_encoded(model, variables, encoded, input_mask, max_decode_len):
  return _greedy_loop(model, variables, encoded, input_mask, max_decode_len)


def _greedy_loop(
  model: T5, variables: Any, encoded: Array, input_mask: Array, max_decode_len: int
) -> Array:
  cfg = model.config
  batch = encoded.shape[0]
  pad, eos = cfg.pad_token_id, cfg.eos_token_id

  def step(cache, tokens):
    """tokens: [B, 1] -> (next-token logits [B, V], new cache)."""
    variables_in = {**variables, "cache": cache} if cache is not None else variables
    logits, mutated = model.apply(
      variables_in,
      encoded,
      input_mask,
      tokens,
      decode=True,
      max_decode_len=max_decode_len,
      method=T5.decode,
      mutable=["cache"],
    )
    return logits[:, -1, :], mutated["cache"]

  # The first step creates the cache (and caches the cross-attention keys/values).
  start = jnp.full((batch, 1), cfg.decoder_start_token_id, jnp.int32)
  logits, cache = step(None, start)
  out = jnp.full((batch, max_decode_len), pad, jnp.int32)
  token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
  out = out.at[:, 0].set(token)
  done = token == eos

  def cond(state):
    i, _, _, done, _ = state
    return (i < max_decode_len) & ~jnp.all(done)

  def body(state):
    i, token, cache, done, out = state
    logits, cache = step(cache, token[:, None])
    nxt = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    nxt = jnp.where(done, pad, nxt)
    out = jax.lax.dynamic_update_slice(out, nxt[:, None], (0, i))
    return i + 1, nxt, cache, done | (nxt == eos), out

  _, _, _, _, out = jax.lax.while_loop(cond, body, (jnp.int32(1), token, cache, done, out))
  return out
