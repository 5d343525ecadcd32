"""A decoder-only transformer (Llama, Mistral, Qwen2) as a Flax linen module.

Pre-norm blocks: RMSNorm, grouped-query self-attention with rotary positions (optional q/k/v
biases), RMSNorm, SwiGLU MLP; a final RMSNorm and the output layer (tied to the token embedding or
a separate `logits_dense`). Parameter tree (logical axes in parentheses):

```
token_embedder/embedding                          [V, H]      (vocab, embed)
layers_{i}/pre_attention_layer_norm/scale         [H]         (embed,)
layers_{i}/attention/query/kernel                 [H, N*D]    (embed, joined_kv)   (+ bias [N*D])
layers_{i}/attention/{key,value}/kernel           [H, K*D]    (embed, joined_kv)   (+ bias [K*D])
layers_{i}/attention/out/kernel                   [N*D, H]    (joined_kv, embed)
layers_{i}/pre_mlp_layer_norm/scale               [H]
layers_{i}/mlp/wi_0/kernel (gate), wi_1 (up)      [H, F]      (embed, mlp)
layers_{i}/mlp/wo/kernel (down)                   [F, H]      (mlp, embed)
decoder_norm/scale                                [H]
logits_dense/kernel                               [H, V]      (embed, vocab)       only untied
```

`K` is `num_kv_heads`. The module is functional about its keys and values: `run` returns every
layer's `(keys, values)` and accepts a `prefix` of them (a context computed earlier, which the new
positions attend to) or a fixed-size `cache` to write into (greedy decoding). Positions and the
attention mask are explicit arguments, so the callers (`prompted_decoder.py`) decide the layout:
right-padded inputs, soft prompts, several options packed in one row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from robust_prompt.model import remat, rope
from robust_prompt.model.attention import mask_to_bias
from robust_prompt.model.decoder_config import DecoderConfig
from robust_prompt.model.layers import (
  Dense,
  Embed,
  MlpBlock,
  RMSNorm,
  constrain,
  default_kernel_init,
)

Array = jax.Array
KV = tuple[Array, Array]  # (keys, values), each [B, L, K, D]

_ACT_AXES = ("batch", "length", "embed")
_HEAD_AXES = ("batch", "length", "heads", "kv")


class BiasedDense(nn.Module):
  """`y = x @ kernel + bias` (Qwen2's q/k/v projections); kernel [in, out], bias [out].

  The bias-free layers use `layers.Dense`; this is the same kernel (same name, same axes) plus a
  bias whose logical axis is the kernel's output axis.
  """

  features: int
  kernel_axes: tuple[str, str]
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """x: [..., in] -> [..., features] in `dtype`."""
    kernel = self.param(
      "kernel",
      nn.with_logical_partitioning(default_kernel_init, self.kernel_axes),
      (x.shape[-1], self.features),
      self.param_dtype,
    )
    bias = self.param(
      "bias",
      nn.with_logical_partitioning(nn.initializers.zeros_init(), (self.kernel_axes[1],)),
      (self.features,),
      self.param_dtype,
    )
    x = x.astype(self.dtype)
    y = jax.lax.dot_general(x, kernel.astype(self.dtype), (((x.ndim - 1,), (0,)), ((), ())))
    return y + bias.astype(self.dtype)


def _dense(cfg: DecoderConfig, features: int, axes: tuple[str, str], name: str, bias: bool):
  cls = BiasedDense if bias else Dense
  return cls(features, axes, dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype, name=name)


def _norm(cfg: DecoderConfig, name: str | None = None) -> RMSNorm:
  return RMSNorm(
    epsilon=cfg.rms_norm_eps, dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype, name=name
  )


class DecoderAttention(nn.Module):
  """Grouped-query self-attention with rotary positions (scaled by `D ** -0.5`, softmax float32)."""

  config: DecoderConfig

  @nn.compact
  def __call__(
    self,
    x: Array,
    cos: Array,
    sin: Array,
    mask_bias: Array,
    *,
    prefix: KV | None = None,
    cache: KV | None = None,
    cache_index: Array | int | None = None,
  ) -> tuple[Array, KV]:
    """Attends the positions of `x` to the prefix (or cache) and to themselves.

    Args:
      x: [B, L, H].
      cos, sin: [B, L, D] float32 rotary angles of x's positions.
      mask_bias: [B, 1, L, K_all] float32 (0 or MASK_VALUE): which keys each query sees. The keys
        are the prefix's then x's own (`K_all = P_len + L`), or the whole cache.
      prefix: keys/values [B, P_len, K, D] (rotated) of earlier positions, e.g. the context.
      cache: keys/values [B, C, K, D]; x's are written at `cache_index` and the whole cache is
        attended to (the mask hides the slots not yet written).
      cache_index: int32 scalar slot of x's first position in `cache`.

    Returns:
      `(out [B, L, H], kv)`: kv is x's own `(keys, values)` [B, L, K, D], or the updated cache.
    """
    cfg = self.config
    n, k_heads, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    b, length, width = x.shape
    q = _dense(cfg, n * d, ("embed", "joined_kv"), "query", cfg.attention_bias)(x)
    k = _dense(cfg, k_heads * d, ("embed", "joined_kv"), "key", cfg.attention_bias)(x)
    v = _dense(cfg, k_heads * d, ("embed", "joined_kv"), "value", cfg.attention_bias)(x)
    q = rope.apply_rotary(q.reshape(b, length, n, d), cos, sin)
    k = rope.apply_rotary(k.reshape(b, length, k_heads, d), cos, sin)
    v = v.reshape(b, length, k_heads, d)
    if cache is not None:
      start = (0, cache_index, 0, 0)
      keys = jax.lax.dynamic_update_slice(cache[0], k.astype(cache[0].dtype), start)
      values = jax.lax.dynamic_update_slice(cache[1], v.astype(cache[1].dtype), start)
      kv = (keys, values)
    else:
      kv = (k, v)
      keys, values = k, v
      if prefix is not None:
        keys = jnp.concatenate([prefix[0].astype(k.dtype), k], axis=1)
        values = jnp.concatenate([prefix[1].astype(v.dtype), v], axis=1)
    if n != k_heads:
      # Query head h reads key/value head h // (N / K), as HF's `repeat_kv`. Repeating to N heads
      # keeps one head axis, which shards over `model` like every other head axis.
      keys = jnp.repeat(keys, n // k_heads, axis=2)
      values = jnp.repeat(values, n // k_heads, axis=2)
    q, keys, values = (constrain(a, _HEAD_AXES) for a in (q, keys, values))
    # Heads beside the batch for the two products (see attention.MultiHeadAttention).
    q, keys, values = (jnp.swapaxes(a, 1, 2) for a in (q, keys, values))
    logits = jnp.einsum("bnqd,bnkd->bnqk", q, keys, preferred_element_type=jnp.float32)
    logits = logits * jnp.float32(d**-0.5) + mask_bias
    weights = jax.nn.softmax(logits, axis=-1).astype(cfg.jnp_dtype)
    out = jnp.swapaxes(jnp.einsum("bnqk,bnkd->bnqd", weights, values), 1, 2)
    out = constrain(out.reshape(b, length, n * d), ("batch", "length", "joined_kv"))
    out = _dense(cfg, width, ("joined_kv", "embed"), "out", cfg.attention_out_bias)(out)
    return out, kv


class DecoderLayer(nn.Module):
  """One pre-norm block: `x + attn(norm(x))`, then `x + swiglu(norm(x))`."""

  config: DecoderConfig

  @nn.compact
  def __call__(self, x, cos, sin, mask_bias, *, prefix=None, cache=None, cache_index=None):
    """x: [B, L, H] -> ([B, L, H], kv); see `DecoderAttention`."""
    cfg = self.config
    h = _norm(cfg, "pre_attention_layer_norm")(x)
    attended, kv = DecoderAttention(cfg, name="attention")(
      h, cos, sin, mask_bias, prefix=prefix, cache=cache, cache_index=cache_index
    )
    x = x + attended
    h = _norm(cfg, "pre_mlp_layer_norm")(x)
    mlp = MlpBlock(
      d_ff=cfg.d_ff,
      activation="silu",
      gated=True,  # wi_0 = gate_proj, wi_1 = up_proj, wo = down_proj
      dtype=cfg.jnp_dtype,
      param_dtype=cfg.jnp_param_dtype,
      name="mlp",
    )
    return constrain(x + mlp(h), _ACT_AXES), kv


def check_window(config: DecoderConfig, length: int) -> None:
  """Refuses sequences longer than Mistral's sliding window (none is implemented).

  Up to the window, sliding-window attention equals full attention, which is what we run.
  """
  if config.sliding_window is not None and length > config.sliding_window:
    raise ValueError(
      f"a sequence of {length} positions is longer than this {config.model_type} model's sliding "
      f"window of {config.sliding_window} tokens, which is not implemented; lower "
      "--max_input_length (and the option / decode lengths) so that the context plus its "
      f"continuation fits in {config.sliding_window}"
    )


def positions_from_mask(mask: Array) -> Array:
  """`[B, T]` mask -> `[B, T] int32` position ids: the count of real tokens before each one.

  Padding (left or right) does not move the real tokens' positions (HF's `cumsum(mask) - 1`).
  """
  return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=1) - 1, 0)


def causal_mask_bias(mask: Array) -> Array:
  """`[B, T]` mask -> `[B, 1, T, T]` additive bias: causal, padding keys hidden."""
  t = mask.shape[1]
  causal = jnp.tril(jnp.ones((t, t), dtype=bool))[None, None]
  return mask_to_bias(causal & mask.astype(bool)[:, None, None, :])


class Decoder(nn.Module):
  """The decoder-only LM. `__call__(input_ids, input_mask)` is the plain causal forward pass."""

  config: DecoderConfig
  # `partitioning.abstract_variables` initialises a module with this many dummy [1, 1] arrays.
  NUM_INIT_INPUTS: ClassVar[int] = 2

  def setup(self):
    cfg = self.config
    self.token_embedder = Embed(
      cfg.vocab_size, cfg.d_model, dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype
    )
    # Rematerialised under `cfg.remat_policy` (same parameters; see model/remat.py).
    layer_cls = remat.remat_layer(DecoderLayer, cfg.remat_policy)
    self.layers = [layer_cls(cfg) for _ in range(cfg.num_layers)]
    self.decoder_norm = _norm(cfg)
    if not cfg.tie_word_embeddings:
      self.logits_dense = Dense(
        cfg.vocab_size,
        ("embed", "vocab"),
        dtype=cfg.jnp_dtype,
        param_dtype=cfg.jnp_param_dtype,
      )

  def embed(self, input_ids: Array) -> Array:
    """input_ids: [B, T] int32 -> token embeddings [B, T, H] (activation dtype)."""
    return self.token_embedder(input_ids)

  def run(
    self,
    embeds: Array,
    positions: Array,
    mask_bias: Array,
    *,
    prefix: Sequence[KV] | None = None,
    cache: Sequence[KV] | None = None,
    cache_index: Array | int | None = None,
  ) -> tuple[Array, tuple[KV, ...]]:
    """Runs the layers over `embeds`.

    Args:
      embeds: [B, L, H] input embeddings (tokens, or tokens and a soft prompt).
      positions: [B, L] int32 rotary positions.
      mask_bias: [B, 1, L, K_all] float32 additive mask over the keys (prefix then own, or cache).
      prefix: per layer, `(keys, values)` [B, P_len, K, D] that the positions attend to first.
      cache: per layer, `(keys, values)` [B, C, K, D] written at `cache_index` (greedy decoding).
      cache_index: int32 scalar, the cache slot of the first position.

    Returns:
      `(hidden [B, L, H], kv)`: the final-normed last-layer states (what `logits` reads) and per
      layer the positions' own keys/values [B, L, K, D] or the updated cache.
    """
    cfg = self.config
    if prefix is not None and cache is not None:
      raise ValueError("Decoder.run takes a prefix or a cache, not both")
    x = constrain(embeds.astype(cfg.jnp_dtype), _ACT_AXES)
    cos, sin = rope.cos_sin(positions, rope.inverse_frequencies(cfg))
    new = []
    for i, layer in enumerate(self.layers):
      x, kv = layer(
        x,
        cos,
        sin,
        mask_bias,
        prefix=None if prefix is None else prefix[i],
        cache=None if cache is None else cache[i],
        cache_index=cache_index,
      )
      new.append(kv)
    return constrain(self.decoder_norm(x), _ACT_AXES), tuple(new)

  def logits(self, hidden: Array) -> Array:
    """hidden: [B, L, H] (from `run`) -> logits [B, L, V] float32."""
    if self.config.tie_word_embeddings:
      out = self.token_embedder.attend(hidden)
    else:
      out = self.logits_dense(hidden).astype(jnp.float32)
    return constrain(out, ("batch", "length", "vocab"))

  def __call__(self, input_ids: Array, input_mask: Array) -> Array:
    """Causal forward pass: [B, T] ids and mask -> logits [B, T, V] float32 (HF's `logits`)."""
    check_window(self.config, input_ids.shape[1])
    hidden, _ = self.run(
      self.embed(input_ids), positions_from_mask(input_mask), causal_mask_bias(input_mask)
    )
    return self.logits(hidden)


def extend_kv(kv: KV, extra: int) -> KV:
  """Extends `(keys, values)` [B, C, K, D] by `extra` zero slots along C (a decoding cache)."""
  pad = ((0, 0), (0, extra), (0, 0), (0, 0))
  return (jnp.pad(kv[0], pad), jnp.pad(kv[1], pad))
