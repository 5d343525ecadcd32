"""The T5 encoder-decoder (T5 1.0, T5 1.1, Flan-T5, T0) as a Flax linen module.

Parameter tree (T5X names, see docs/design.md):
`token_embedder`, `encoder/{relpos_bias, layers_i, encoder_norm}`,
`decoder/{relpos_bias, layers_i, decoder_norm, logits_dense}`.

`model.init` returns parameters boxed in `nn.LogicallyPartitioned` (they carry their logical axis
names); `partitioning.unbox` strips them, and `apply` accepts either form.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from robust_prompt.model import remat
from robust_prompt.model.attention import MultiHeadAttention, RelativePositionBiases, mask_to_bias
from robust_prompt.model.config import T5Config
from robust_prompt.model.layers import Dense, Embed, MlpBlock, RMSNorm, constrain
from robust_prompt.model.option_layout import DecoderLayout

Array = jax.Array

_ACT_AXES = ("batch", "length", "embed")


def _norm(cfg: T5Config, name: str) -> RMSNorm:
  return RMSNorm(
    epsilon=cfg.layer_norm_epsilon, dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype, name=name
  )


def _attention(cfg: T5Config, name: str) -> MultiHeadAttention:
  return MultiHeadAttention(
    num_heads=cfg.num_heads,
    head_dim=cfg.head_dim,
    dtype=cfg.jnp_dtype,
    param_dtype=cfg.jnp_param_dtype,
    name=name,
  )


def _mlp(cfg: T5Config) -> MlpBlock:
  return MlpBlock(
    d_ff=cfg.d_ff,
    activation=cfg.activation,
    gated=cfg.is_gated,
    dtype=cfg.jnp_dtype,
    param_dtype=cfg.jnp_param_dtype,
    name="mlp",
  )


def _mlp_sublayer(cfg: T5Config, x: Array) -> Array:
  """The last sublayer of every layer: pre-norm MLP plus the residual -> the layer's output."""
  h = _norm(cfg, "pre_mlp_layer_norm")(x)
  return constrain(x + _mlp(cfg)(h), _ACT_AXES)


def _relpos(cfg: T5Config, bidirectional: bool) -> RelativePositionBiases:
  return RelativePositionBiases(
    num_buckets=cfg.relative_attention_num_buckets,
    max_distance=cfg.relative_attention_max_distance,
    num_heads=cfg.num_heads,
    bidirectional=bidirectional,
    dtype=cfg.jnp_dtype,
    param_dtype=cfg.jnp_param_dtype,
    name="relpos_bias",
  )


@jax.custom_vjp
def _fork(x: Array) -> tuple[Array, Array]:
  """`(x, x)`: one copy for a decoder layer, one for the layers after it (identity forward).

  Its backward pass sums the two cotangents behind an optimization barrier, so that the
  gradient of the encoder output is accumulated layer by layer. Were `encoded` read directly by
  every layer, XLA would sum its `2 L` contributions (cross-attention's two products per layer)
  in one fusion at the end of the backward pass, all of them live at once: 48 x [B, T, H] for
  XXL, more than all rematerialised layer inputs together (benchmarks/README.md, issue 15).
  """
  return x, x


def _fork_fwd(x: Array) -> tuple[tuple[Array, Array], None]:
  return (x, x), None


def _fork_bwd(_, cotangents: tuple[Array, Array]) -> tuple[Array]:
  here, later = cotangents
  return (jax.lax.optimization_barrier(here + later),)


_fork.defvjp(_fork_fwd, _fork_bwd)


class EncoderLayer(nn.Module):
  config: T5Config

  @nn.compact
  def __call__(self, x: Array, position_bias: Array, mask_bias: Array) -> Array:
    """x: [B, T, H] -> [B, T, H]."""
    cfg = self.config
    h = _norm(cfg, "pre_attention_layer_norm")(x)
    x = x + _attention(cfg, "attention")(h, h, position_bias, mask_bias)
    return _mlp_sublayer(cfg, x)


class DecoderLayer(nn.Module):
  config: T5Config

  @nn.compact
  def __call__(
    self,
    x: Array,
    encoded: Array | None,
    position_bias: Array,
    self_mask_bias: Array | None,
    cross_mask_bias: Array,
    *,
    decode: bool = False,
    decode_position: Array | None = None,
    max_decode_len: int | None = None,
    encoder_index: Array | None = None,
  ) -> Array:
    """x: [R, S, H], encoded: [R, T, H] (or [B, T, H] with `encoder_index` [R]) -> [R, S, H]."""
    cfg = self.config
    h = _norm(cfg, "pre_self_attention_layer_norm")(x)
    x = x + _attention(cfg, "self_attention")(
      h,
      h,
      position_bias,
      self_mask_bias,
      decode=decode,
      decode_position=decode_position,
      max_decode_len=max_decode_len,
    )
    h = _norm(cfg, "pre_cross_attention_layer_norm")(x)
    x = x + _attention(cfg, "encoder_decoder_attention")(
      h,
      encoded,
      None,
      cross_mask_bias,
      decode=decode,
      is_cross=True,
      kv_index=encoder_index,
    )
    return _mlp_sublayer(cfg, x)


class Encoder(nn.Module):
  config: T5Config

  @nn.compact
  def __call__(self, embeds: Array, mask: Array) -> Array:
    """embeds: [B, T, H], mask: [B, T] (1 = real token) -> [B, T, H]."""
    cfg = self.config
    x = constrain(embeds.astype(cfg.jnp_dtype), _ACT_AXES)
    t = x.shape[1]
    position_bias = _relpos(cfg, bidirectional=True)(t, t)
    mask_bias = mask_to_bias(mask)[:, None, None, :]  # [B, 1, 1, T]
    layer_cls = remat.remat_layer(EncoderLayer, cfg.remat_policy)
    for i in range(cfg.num_encoder_layers):
      x = layer_cls(cfg, name=f"layers_{i}")(x, position_bias, mask_bias)
    return constrain(_norm(cfg, "encoder_norm")(x), _ACT_AXES)


class Decoder(nn.Module):
  """The decoder stack; `shared_embedding` is the parent's `token_embedder`."""

  config: T5Config
  shared_embedding: Embed

  @nn.compact
  def __call__(
    self,
    encoded: Array | None,
    encoder_mask: Array,
    decoder_input_ids: Array,
    decoder_mask: Array | None,
    *,
    decode: bool = False,
    max_decode_len: int | None = None,
    encoder_index: Array | None = None,
    layout: DecoderLayout | None = None,
  ) -> Array:
    """Returns logits [R, S, V] float32. See `T5.decode`."""
    cfg = self.config
    if layout is not None and decode:
      raise ValueError("a decoder layout is for teacher forcing (decode=False)")
    x = constrain(self.shared_embedding(decoder_input_ids), _ACT_AXES)
    s = x.shape[1]
    relpos = _relpos(cfg, bidirectional=False)
    if encoder_index is not None:
      # The mask is gathered here once; each layer's cross-attention gathers its own keys/values.
      encoder_mask = encoder_mask[encoder_index]
    cross_mask_bias = mask_to_bias(encoder_mask)[:, None, None, :]
    if decode:
      if max_decode_len is None:
        raise ValueError("T5.decode(decode=True) needs max_decode_len (the KV cache length)")
      position = self.variable("cache", "position", lambda: jnp.zeros((), jnp.int32))
      pos = position.value
      position_bias = relpos(s, max_decode_len, q_offset=pos)
      # Causal mask over the whole cache: key j is visible from query pos + i iff j <= pos + i.
      q_pos = pos + jnp.arange(s)
      self_mask_bias = mask_to_bias(jnp.arange(max_decode_len)[None, :] <= q_pos[:, None])
      self_mask_bias = self_mask_bias[None, None]
      position.value = pos + s
    else:
      pos = None
      if layout is None:
        position_bias = relpos(s, s)
        causal = jnp.tril(jnp.ones((s, s), dtype=bool))[None, None]
      else:
        if layout.visible.shape != (s, s):
          raise ValueError(f"decoder layout is for {layout.visible.shape[0]} positions, not {s}")
        position_bias = relpos(s, s, relative_position=layout.relative_position)
        causal = jnp.asarray(layout.visible)[None, None]
      if decoder_mask is not None:
        causal = causal & decoder_mask.astype(bool)[:, None, None, :]
      self_mask_bias = mask_to_bias(causal)
    if decode:
      # Incremental decoding is never differentiated, and its Python flags steer tracing (a
      # rematerialised layer would trace them): the plain layer.
      layer_cls = DecoderLayer
      decode_args = dict(decode=True, decode_position=pos, max_decode_len=max_decode_len)
    else:
      layer_cls = remat.remat_layer(DecoderLayer, cfg.remat_policy)
      decode_args = {}
    rest = encoded
    for i in range(cfg.num_decoder_layers):
      layer_encoded = rest
      if not decode and rest is not None:
        layer_encoded, rest = _fork(rest)  # see `_fork`: accumulates d(encoded) layer by layer
      x = layer_cls(cfg, name=f"layers_{i}")(
        x,
        layer_encoded,
        position_bias,
        self_mask_bias,
        cross_mask_bias,
        encoder_index=encoder_index,
        **decode_args,
      )
    x = _norm(cfg, "decoder_norm")(x)
    if cfg.tie_word_embeddings:
      # T5 1.0: rescale before the tied output projection (as in Mesh TF / HF).
      logits = self.shared_embedding.attend(x * jnp.asarray(cfg.d_model**-0.5, x.dtype))
    else:
      kernel_dense = Dense(
        cfg.vocab_size,
        ("embed", "vocab"),
        dtype=cfg.jnp_dtype,
        param_dtype=cfg.jnp_param_dtype,
        name="logits_dense",
      )
      logits = kernel_dense(x).astype(jnp.float32)
    return constrain(logits, ("batch", "length", "vocab"))


class T5(nn.Module):
  """T5 encoder-decoder. See docs/design.md ("Model API") for the public methods."""

  config: T5Config

  def setup(self):
    cfg = self.config
    self.token_embedder = Embed(
      cfg.vocab_size, cfg.d_model, dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype
    )
    self.encoder = Encoder(cfg)
    self.decoder = Decoder(cfg, shared_embedding=self.token_embedder)

  def embed(self, input_ids: Array) -> Array:
    """input_ids: [B, T] int32 -> token embeddings [B, T, H] (activation dtype)."""
    return self.token_embedder(input_ids)

  def encode_embeds(self, embeds: Array, input_mask: Array) -> Array:
    """embeds: [B, T, H], input_mask: [B, T] -> encoder outputs [B, T, H].

    The entry point for soft prompts: prepend the prompt to `embed(input_ids)` and encode.
    """
    return self.encoder(embeds, input_mask)

  def encode(self, input_ids: Array, input_mask: Array) -> Array:
    """input_ids: [B, T] int32, input_mask: [B, T] -> encoder outputs [B, T, H]."""
    return self.encoder(self.token_embedder(input_ids), input_mask)

  def decode(
    self,
    encoded: Array,
    encoder_mask: Array,
    decoder_input_ids: Array,
    decoder_mask: Array | None = None,
    *,
    decode: bool = False,
    max_decode_len: int | None = None,
    encoder_index: Array | None = None,
    layout: DecoderLayout | None = None,
  ) -> Array:
    """Teacher-forced (or, with `decode=True`, incremental) decoding.

    Args:
      encoded: [B, T, H] encoder outputs (ignored after the first incremental step).
      encoder_mask: [B, T] (1 = real token).
      decoder_input_ids: [R, S] int32, `shift_right(targets)`; R = B unless `encoder_index`.
      decoder_mask: [R, S] or None (all ones). Unused when `decode`.
      decode: use/update the KV cache in the "cache" collection (apply with mutable=["cache"]).
      max_decode_len: KV cache length when `decode`.
      encoder_index: [R] int32 or None: decoder row r reads input `encoder_index[r]` (several
        targets per input, e.g. the O options of a question). The result of passing
        `encoded[encoder_index]` and `encoder_mask[encoder_index]` (up to float32 rounding), but
        cross-attention projects keys/values once per input (B rows) instead of once per target
        (R rows). Under a mesh, shard it like the decoder rows (R on `data`). With `decode`, pass
        it with the [B, T] mask at every step (the cache holds the gathered [R, ...] keys/values).
      layout: a static `option_layout.DecoderLayout` over the S positions (teacher forcing
        only), replacing the causal chain: which positions each one sees, and their relative
        positions. With `option_layout.shared_start_layout` one row holds all options of an
        input, sharing the start position (the fastest way to score short options).

    Returns:
      logits [R, S, V] float32.
    """
    return self.decoder(
      encoded,
      encoder_mask,
      decoder_input_ids,
      decoder_mask,
      decode=decode,
      max_decode_len=max_decode_len,
      encoder_index=encoder_index,
      layout=layout,
    )

  def __call__(
    self,
    input_ids: Array,
    input_mask: Array,
    decoder_input_ids: Array,
    decoder_mask: Array | None = None,
  ) -> Array:
    """Full forward pass: [B, T] inputs, [B, S] decoder inputs -> logits [B, S, V] float32."""
    encoded = self.encode(input_ids, input_mask)
    return self.decode(encoded, input_mask, decoder_input_ids, decoder_mask)
