"""Rotary position embeddings (RoPE) as Hugging Face's Llama computes them.

The frequencies are static (numpy, float32 like PyTorch); the angles are computed per position in
float32 and applied with the "rotate half" convention (the first and second halves of the head
dimension form the pairs), which is how HF checkpoints of Llama, Mistral and Qwen2 are laid out.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from robust_prompt.model.decoder_config import DecoderConfig

Array = jax.Array


def inverse_frequencies(config: DecoderConfig) -> np.ndarray:
  """`[D / 2] float32`: the rotary frequency of each pair of the head dimension.

  "default": `theta ** (-2i / D)`; "linear": the same divided by `rope_factor`; "llama3": Llama
  3.1's rule (`_compute_llama3_parameters` in transformers): wavelengths longer than
  `original_max / low_freq_factor` are divided by `factor`, shorter than
  `original_max / high_freq_factor` kept, and the band between interpolated smoothly.
  """
  d = config.head_dim
  exponent = np.arange(0, d, 2, dtype=np.int64).astype(np.float32) / np.float32(d)
  inv_freq = (1.0 / np.power(np.float32(config.rope_theta), exponent)).astype(np.float32)
  if config.rope_type == "linear":
    return (inv_freq / np.float32(config.rope_factor)).astype(np.float32)
  if config.rope_type == "llama3":
    factor = np.float32(config.rope_factor)
    low, high = np.float32(config.rope_low_freq_factor), np.float32(config.rope_high_freq_factor)
    old_len = np.float32(config.rope_original_max_position)
    low_freq_wavelen = old_len / low
    high_freq_wavelen = old_len / high
    wavelen = np.float32(2 * math.pi) / inv_freq
    scaled = np.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return np.where(is_medium, smoothed, scaled).astype(np.float32)
  return inv_freq


def cos_sin(positions: Array, inv_freq: np.ndarray) -> tuple[Array, Array]:
  """positions: `[B, L] int` -> `(cos, sin)`, each `[B, L, D] float32`."""
  angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)[None, None, :]
  angles = jnp.concatenate([angles, angles], axis=-1)
  return jnp.cos(angles), jnp.sin(angles)


def apply_rotary(x: Array, cos: Array, sin: Array) -> Array:
  """x: `[B, L, N, D]`, cos/sin: `[B, L, D] float32` -> rotated x, in x's dtype.

  As HF: the angles are cast to x's dtype first, then `x * cos + rotate_half(x) * sin`.
  """
  cos = cos.astype(x.dtype)[:, :, None, :]
  sin = sin.astype(x.dtype)[:, :, None, :]
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  return x * cos + rotated * sin
