"""The one greedy decoder of T5: a KV cache, token-for-token equal to HF `generate(num_beams=1)`.

Step `k` conditions on the greedy prefix `g_<k` (decoder start token first). After a row emitted
EOS its later tokens are PAD, as Hugging Face `generate` writes them (and feeds them back). The
first step fills the cache (cross-attention keys/values of the encoder output, projected once);
each later step feeds one token in a `lax.while_loop` that stops when every row is done.

With `option_ids`, each step's distribution also scores the options' tokens of that step (what
the `greedy_prefix` rank-classification mode needs: `eval/rank.py`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from robust_prompt.model.t5 import T5

Array = jax.Array


def greedy_decode(
  model: T5,
  params: Any,
  encoded: Array,
  encoder_mask: Array,
  num_steps: int,
  *,
  option_ids: Array | None = None,
) -> tuple[Array, Array | None]:
  """Greedy (argmax) decoding of at most `num_steps` tokens.

  Args:
    model: the `T5` module; params: its parameter tree (bare, not `{"params": ...}`).
    encoded: `[B, T, H]` encoder outputs; encoder_mask: `[B, T]`.
    num_steps: K, the number of tokens to generate (static; EOS included).
    option_ids: optional `[B, O, S] int32` with `S >= K`: option tokens scored under each step's
      distribution.

  Returns:
    `(tokens [B, K] int32, option_step_log_probs [B, O, K] float32 or None)`: tokens are PAD
    after a row's EOS; step log-probs are 0 for steps after every row finished.
  """
  cfg = model.config
  b = encoded.shape[0]
  pad, eos = cfg.pad_token_id, cfg.eos_token_id
  with_options = option_ids is not None
  num_o = option_ids.shape[1] if with_options else 0
  if with_options:
    option_ids = option_ids[:, :, :num_steps]

  def step(cache, token):
    """token: [B] -> (next-token logits [B, V], new cache)."""
    variables = {"params": params} if cache is None else {"params": params, "cache": cache}
    logits, mutated = model.apply(
      variables,
      encoded,
      encoder_mask,
      token[:, None],
      decode=True,
      max_decode_len=num_steps,
      method=T5.decode,
      mutable=["cache"],
    )
    return logits[:, -1, :], mutated["cache"]

  def pick(logits, done, k, tokens, step_lp):
    token = jnp.where(done, pad, jnp.argmax(logits, axis=-1).astype(jnp.int32))  # first max on ties
    tokens = jax.lax.dynamic_update_slice(tokens, token[:, None], (0, k))
    if with_options:
      log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
      want = jax.lax.dynamic_index_in_dim(option_ids, k, axis=2, keepdims=False)  # [B, O]
      picked = jnp.take_along_axis(log_probs, want, axis=-1)  # [B, O]
      step_lp = jax.lax.dynamic_update_slice(step_lp, picked[:, :, None], (0, 0, k))
    return token, done | (token == eos), tokens, step_lp

  tokens = jnp.full((b, num_steps), pad, jnp.int32)
  step_lp = jnp.zeros((b, num_o, num_steps), jnp.float32)
  start = jnp.full((b,), cfg.decoder_start_token_id, jnp.int32)
  # The first step creates the cache (and the cross-attention keys/values); `encoded` is not
  # read again once they are cached.
  logits, cache = step(None, start)
  token, done, tokens, step_lp = pick(logits, jnp.zeros((b,), bool), 0, tokens, step_lp)

  def cond(state):
    k, _, _, done, _, _ = state
    return (k < num_steps) & ~jnp.all(done)

  def body(state):
    k, token, cache, done, tokens, step_lp = state
    logits, cache = step(cache, token)
    token, done, tokens, step_lp = pick(logits, done, k, tokens, step_lp)
    return k + 1, token, cache, done, tokens, step_lp

  init = (jnp.int32(1), token, cache, done, tokens, step_lp)
  _, _, _, _, tokens, step_lp = jax.lax.while_loop(cond, body, init)
  return tokens, (step_lp if with_options else None)
