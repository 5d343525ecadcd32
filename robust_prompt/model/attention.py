"""Multi-head attention (T5 style: no 1/sqrt(D) scaling, optional KV cache) and relative biases."""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from robust_prompt.model.layers import Dense, constrain

Array = jax.Array
Dtype = Any

# Added to the logits of masked keys. HF uses the same value, so that even fully masked (padding)
# query rows produce the same numbers.
MASK_VALUE = float(np.finfo(np.float32).min)


def relative_position_bucket(
  relative_position: np.ndarray, bidirectional: bool, num_buckets: int, max_distance: int
) -> np.ndarray:
  """T5's bucketing of `key_pos - query_pos`, bit-for-bit as Hugging Face computes it.

  Runs in numpy at trace time (positions are static), in float32 like PyTorch; T5X adds an epsilon
  inside the log, which moves a few boundary positions, so we follow HF.

  Args:
    relative_position: int array of `memory_position - query_position`.
    bidirectional: encoder (True) or causal decoder (False).
    num_buckets: number of buckets.
    max_distance: distances at or beyond this share the last bucket.

  Returns:
    int32 array of bucket ids, same shape as `relative_position`.
  """
  rel = np.asarray(relative_position, dtype=np.int64)
  buckets = np.zeros_like(rel)
  if bidirectional:
    num_buckets //= 2
    buckets += (rel > 0).astype(np.int64) * num_buckets
    rel = np.abs(rel)
  else:
    rel = -np.minimum(rel, 0)
  max_exact = num_buckets // 2
  is_small = rel < max_exact
  with np.errstate(divide="ignore", invalid="ignore"):
    scaled = (
      np.log(rel.astype(np.float32) / np.float32(max_exact))
      / np.float32(math.log(max_distance / max_exact))
      * np.float32(num_buckets - max_exact)
    )
  scaled = np.where(is_small, 0.0, scaled)  # log(0) = -inf only occurs where `is_small`
  large = max_exact + scaled.astype(np.int64)
  large = np.minimum(large, num_buckets - 1)
  buckets += np.where(is_small, rel, large)
  return buckets.astype(np.int32)


class RelativePositionBiases(nn.Module):
  """Learned per-head bias for each relative-position bucket; computed once per stack.

  Attributes:
    num_buckets: number of buckets (param `rel_embedding` is [N, num_buckets]).
    max_distance: see `relative_position_bucket`.
    num_heads: N.
    bidirectional: encoder (True) or decoder (False).
  """

  num_buckets: int
  max_distance: int
  num_heads: int
  bidirectional: bool
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(
    self,
    q_len: int,
    k_len: int,
    q_offset: Array | int = 0,
    relative_position: np.ndarray | None = None,
  ) -> Array:
    """Returns the bias [1, N, q_len, k_len] float32 for queries at `q_offset + arange(q_len)`.

    `q_offset` may be traced (incremental decoding); the bucket table is still static.
    `relative_position` ([q_len, k_len] int, static) replaces the positions of a plain sequence
    (e.g. the option tree of `option_layout`).
    """
    rel_embedding = self.param(
      "rel_embedding",
      nn.with_logical_partitioning(
        nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"), ("heads", "relpos_buckets")
      ),
      (self.num_heads, self.num_buckets),
      self.param_dtype,
    )
    if relative_position is None and isinstance(q_offset, int):
      relative_position = np.arange(k_len)[None, :] - (q_offset + np.arange(q_len))[:, None]
    if relative_position is not None:
      buckets = jnp.asarray(
        relative_position_bucket(
          relative_position, self.bidirectional, self.num_buckets, self.max_distance
        )
      )
    else:
      # Table of buckets for every possible relative position in [-(L-1), k_len - 1].
      span = max(q_len, k_len)
      table = jnp.asarray(
        relative_position_bucket(
          np.arange(-(span - 1), k_len), self.bidirectional, self.num_buckets, self.max_distance
        )
      )
      rel = jnp.arange(k_len)[None, :] - (q_offset + jnp.arange(q_len))[:, None]
      buckets = jnp.take(table, jnp.clip(rel + span - 1, 0, table.shape[0] - 1), axis=0)
    bias = jnp.take(rel_embedding.astype(jnp.float32), buckets, axis=1)  # [N, q, k]
    return bias[None]


def mask_to_bias(mask: Array) -> Array:
  """A boolean/0-1 mask (True = attend) -> additive float32 bias (0 or MASK_VALUE)."""
  return jnp.where(mask.astype(bool), jnp.float32(0.0), jnp.float32(MASK_VALUE))


class MultiHeadAttention(nn.Module):
  """T5 multi-head attention with 2-D kernels (heads and head dim joined in `joined_kv`).

  No 1/sqrt(D) scaling (folded into the initialisation in T5). Softmax in float32.

  Attributes:
    num_heads: N.
    head_dim: D.
    absorb_cross: teacher-forced cross-attention in the absorbed form (see
      `_absorbed_cross_attention`): True, False, or None to choose whichever form needs fewer
      FLOPs for the shapes at hand (`absorbed_is_cheaper`).
  """

  num_heads: int
  head_dim: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  absorb_cross: bool | None = None

  def _dense(self, features: int, axes: tuple[str, str], name: str) -> Dense:
    return Dense(features, axes, dtype=self.dtype, param_dtype=self.param_dtype, name=name)

  def _project(self, x: Array, name: str) -> Array:
    """x: [B, L, H] -> [B, L, N, D]."""
    y = self._dense(self.num_heads * self.head_dim, ("embed", "joined_kv"), name)(x)
    y = y.reshape(*y.shape[:-1], self.num_heads, self.head_dim)
    return constrain(y, ("batch", "length", "heads", "kv"))

  @staticmethod
  def _gather_rows(kv: Array, index: Array | None) -> Array:
    """kv: [B_kv, K, N, D], index: [R] int or None -> [R, K, N, D] (kv itself when None).

    Plain indexing, as `encoded[index]` would be. Each row's projection is independent of the
    others, so gathering after projecting equals projecting gathered rows, up to float32 rounding
    (XLA chooses its dot kernel, hence the summation order, by the number of rows).
    """
    if index is None:
      return kv
    return constrain(kv[index], ("batch", "length", "heads", "kv"))

  @nn.compact
  def __call__(
    self,
    inputs_q: Array,
    inputs_kv: Array | None,
    position_bias: Array | None = None,
    mask_bias: Array | None = None,
    *,
    decode: bool = False,
    decode_position: Array | None = None,
    max_decode_len: int | None = None,
    is_cross: bool = False,
    kv_index: Array | None = None,
  ) -> Array:
    """Attends `inputs_q` to `inputs_kv`.

    Args:
      inputs_q: [B, Q, H].
      inputs_kv: [B, K, H]; ignored for cross-attention once its cache is filled.
      position_bias: [1, N, Q, K] float32 relative position bias (or None).
      mask_bias: additive float32 bias broadcastable to [B, N, Q, K] (0 or MASK_VALUE).
      decode: incremental decoding with a KV cache in the "cache" collection. Self-attention
        writes the new keys/values at `decode_position` into a [B, max_decode_len, N, D] cache and
        attends over the whole cache (the caller's biases mask the future). Cross-attention
        projects `inputs_kv` once (first call) and reuses the cached keys/values afterwards.
      decode_position: int32 scalar, position of the first query when `decode`.
      max_decode_len: cache length when `decode` (self-attention).
      is_cross: this is encoder-decoder attention.
      kv_index: [Q_B] int32 or None (cross-attention only): query row r attends to row
        `kv_index[r]` of `inputs_kv`, which then has its own batch size [B_kv, K, H]. Keys and values
        are projected once per `inputs_kv` row and gathered afterwards, so scoring O targets of an
        input costs one K/V projection, not O. With `decode`, the gathered keys/values are cached.

    Returns:
      [B, Q, H] in `dtype`.
    """
    if kv_index is not None and not is_cross:
      raise ValueError("kv_index is for cross-attention only (self-attention keys are the queries)")
    q = self._project(inputs_q, "query")
    if decode and is_cross:
      have = self.has_variable("cache", "cross_key")
      if have:
        k = self.get_variable("cache", "cross_key")
        v = self.get_variable("cache", "cross_value")
      else:
        k = self._gather_rows(self._project(inputs_kv, "key"), kv_index)
        v = self._gather_rows(self._project(inputs_kv, "value"), kv_index)
        self.put_variable("cache", "cross_key", k)
        self.put_variable("cache", "cross_value", v)
    elif decode:
      k_new = self._project(inputs_kv, "key")
      v_new = self._project(inputs_kv, "value")
      batch = k_new.shape[0]
      shape = (batch, max_decode_len, self.num_heads, self.head_dim)
      cached_key = self.variable("cache", "cached_key", jnp.zeros, shape, k_new.dtype)
      cached_value = self.variable("cache", "cached_value", jnp.zeros, shape, v_new.dtype)
      start = (0, decode_position, 0, 0)
      cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, k_new, start)
      cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, v_new, start)
      k, v = cached_key.value, cached_value.value
    else:
      absorb = self.absorb_cross
      if absorb is None and is_cross:
        kv_rows, k_len, width = inputs_kv.shape
        absorb = absorbed_is_cheaper(q.shape[0], q.shape[1], kv_rows, k_len, width, self.head_dim)
      if absorb and is_cross:
        kv_rows = inputs_kv if kv_index is None else inputs_kv[kv_index]
        out = self._absorbed_cross_attention(q, kv_rows, mask_bias)
        return self._output(out, inputs_q.shape[-1])
      k = self._gather_rows(self._project(inputs_kv, "key"), kv_index)
      v = self._gather_rows(self._project(inputs_kv, "value"), kv_index)

    # Heads next to the batch ([B, N, L, D]) before the two batched products: XLA:CPU runs
    # "bnqd,bnkd" about 3x faster than the same contraction over "bqnd,bknd" (measured on
    # T5-small shapes), and on accelerators the transposes fuse away.
    q, k, v = (jnp.swapaxes(a, 1, 2) for a in (q, k, v))
    logits = jnp.einsum("bnqd,bnkd->bnqk", q, k, preferred_element_type=jnp.float32)
    if position_bias is not None:
      logits = logits + position_bias
    if mask_bias is not None:
      logits = logits + mask_bias
    weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    out = jnp.swapaxes(jnp.einsum("bnqk,bnkd->bnqd", weights, v), 1, 2)  # [B, Q, N, D]
    return self._output(out, inputs_q.shape[-1])

  def _output(self, out: Array, features: int) -> Array:
    """out: [B, Q, N, D] -> [B, Q, H]."""
    out = out.reshape(*out.shape[:2], self.num_heads * self.head_dim)
    out = constrain(out, ("batch", "length", "joined_kv"))
    return self._dense(features, ("joined_kv", "embed"), "out")(out)

  def _absorbed_cross_attention(self, q: Array, kv: Array, mask_bias: Array | None) -> Array:
    """Cross-attention without projecting the encoder output: q [B, Q, N, D], kv [B, K, H].

    `q . (kv Wk) = (q Wk^T) . kv` and `w (kv Wv) = (w kv) Wv`: the queries are taken into the
    model width instead of the K encoder positions into keys and values. The same numbers up to
    float32 rounding, in `2 Q N H (D + K)` multiply-adds per row instead of `2 N D K (H + Q)`:
    far fewer when the decoder has few positions (scoring short options), since K/V projections
    of every encoder position are what dominates there.

    Returns:
      [B, Q, N, D] in `dtype`.
    """
    h = kv.shape[-1]
    shape = (h, self.num_heads, self.head_dim)
    wk = self._dense(self.num_heads * self.head_dim, ("embed", "joined_kv"), "key")(
      None, in_features=h
    ).reshape(shape)
    wv = self._dense(self.num_heads * self.head_dim, ("embed", "joined_kv"), "value")(
      None, in_features=h
    ).reshape(shape)
    kv = kv.astype(self.dtype)
    qk = jnp.einsum("bqnd,hnd->bnqh", q, wk)  # [B, N, Q, H]
    qk = constrain(qk, ("batch", "heads", "length", "embed"))
    logits = jnp.einsum("bnqh,bkh->bnqk", qk, kv, preferred_element_type=jnp.float32)
    if mask_bias is not None:
      logits = logits + mask_bias
    weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    ctx = jnp.einsum("bnqk,bkh->bnqh", weights, kv)  # [B, N, Q, H]
    ctx = constrain(ctx, ("batch", "heads", "length", "embed"))
    return jnp.einsum("bnqh,hnd->bqnd", ctx, wv)


def absorbed_is_cheaper(
  q_rows: int, q_len: int, kv_rows: int, k_len: int, width: int, head_dim: int
) -> bool:
  """Whether absorbed cross-attention needs fewer multiply-adds than projecting keys/values.

  Per head: projecting costs `2 K H D` per key/value row plus `2 Q K D` per query row; absorbing
  costs `2 Q H (D + K)` per query row (`q_rows` query rows read `kv_rows` encoder rows).
  """
  project = kv_rows * 2 * k_len * width * head_dim + q_rows * 2 * q_len * k_len * head_dim
  absorb = q_rows * 2 * q_len * width * (head_dim + k_len)
  return absorb < project
