"""Building blocks with logical axis names: RMS layer norm, dense, embedding, T5 MLP blocks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Dtype = Any

# T5X initialisers (only used when training from scratch / in tests; checkpoints overwrite them).
default_kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
default_embed_init = nn.initializers.normal(stddev=1.0)


def constrain(x: Array, axes: Sequence[str | None]) -> Array:
  """Annotates an activation with logical axes (a no-op unless rules and a mesh are active)."""
  return nn.with_logical_constraint(x, tuple(axes))


class RMSNorm(nn.Module):
  """T5 layer norm: no mean subtraction, no bias; statistics in float32 as HF and T5X do.

  Attributes:
    epsilon: added to the mean square.
    dtype: output dtype.
    param_dtype: dtype of `scale` [H].
  """

  epsilon: float = 1e-6
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """x: [..., H] -> [..., H] in `dtype`."""
    scale = self.param(
      "scale",
      nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
      (x.shape[-1],),
      self.param_dtype,
    )
    x32 = x.astype(jnp.float32)
    var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    y = x32 * jax.lax.rsqrt(var + self.epsilon)
    return (y.astype(self.dtype)) * scale.astype(self.dtype)


class Dense(nn.Module):
  """A bias-free 2-D dense layer `y = x @ kernel` with logical axes on its kernel [in, out].

  Attributes:
    features: output width.
    kernel_axes: logical axis names of the kernel, e.g. ("embed", "joined_kv").
  """

  features: int
  kernel_axes: tuple[str, str]
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Callable[..., Array] = default_kernel_init

  @nn.compact
  def __call__(self, x: Array | None, *, in_features: int | None = None) -> Array:
    """x: [..., in] -> [..., features] in `dtype`.

    Called as `dense(None, in_features=n)` it returns its kernel [n, features] (in `dtype`)
    instead, for callers that contract it differently (attention's absorbed cross-attention).
    """
    if (x is None) == (in_features is None):
      raise ValueError("Dense takes either an input or in_features (to return its kernel)")
    kernel = self.param(
      "kernel",
      nn.with_logical_partitioning(self.kernel_init, self.kernel_axes),
      (x.shape[-1] if x is not None else in_features, self.features),
      self.param_dtype,
    )
    kernel = kernel.astype(self.dtype)
    if x is None:
      return kernel
    x = x.astype(self.dtype)
    return jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))


class Embed(nn.Module):
  """Token embedding [V, H] (logical axes vocab, embed); `attend` gives tied output logits."""

  num_embeddings: int
  features: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  embedding_init: Callable[..., Array] = default_embed_init

  def setup(self):
    self.embedding = self.param(
      "embedding",
      nn.with_logical_partitioning(self.embedding_init, ("vocab", "embed")),
      (self.num_embeddings, self.features),
      self.param_dtype,
    )

  def __call__(self, ids: Array) -> Array:
    """ids: [B, T] int -> [B, T, H] in `dtype`."""
    return jnp.take(self.embedding, ids, axis=0).astype(self.dtype)

  def attend(self, query: Array) -> Array:
    """query: [B, S, H] -> [B, S, V] float32 (dot with every embedding row)."""
    emb = self.embedding.astype(self.dtype)
    return jnp.einsum(
      "bsh,vh->bsv", query.astype(self.dtype), emb, preferred_element_type=jnp.float32
    )


def _activation(name: str) -> Callable[[Array], Array]:
  if name == "relu":
    return jax.nn.relu
  if name == "gelu":
    return lambda x: jax.nn.gelu(x, approximate=False)
  if name == "gelu_tanh":
    return lambda x: jax.nn.gelu(x, approximate=True)
  if name == "silu":
    return jax.nn.silu
  raise ValueError(f"unknown MLP activation {name!r}")


class MlpBlock(nn.Module):
  """T5 feed-forward block: `wo(act(wi(x)))` (T5 1.0) or `wo(act(wi_0(x)) * wi_1(x))` (gated).

  Attributes:
    d_ff: inner width F.
    activation: 'relu', 'gelu', 'gelu_tanh' or 'silu'.
    gated: gated variant (T5 1.1).
  """

  d_ff: int
  activation: str = "relu"
  gated: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """x: [B, L, H] -> [B, L, H]."""
    act = _activation(self.activation)
    dense = lambda features, axes, name: Dense(
      features, axes, dtype=self.dtype, param_dtype=self.param_dtype, name=name
    )
    if self.gated:
      h = act(dense(self.d_ff, ("embed", "mlp"), "wi_0")(x)) * dense(
        self.d_ff, ("embed", "mlp"), "wi_1"
      )(x)
    else:
      h = act(dense(self.d_ff, ("embed", "mlp"), "wi")(x))
    h = constrain(h, ("batch", "length", "mlp"))
    return dense(x.shape[-1], ("mlp", "embed"), "wo")(h)
