"""The decoder positions of O options laid out as one tree: a shared start, then O chains.

Teacher forcing feeds option `o` the decoder inputs `[start, y_0, ..., y_{S-2}]`. Position 0 is
the same for every option (the start token, and the same encoder output), so scoring O options
as O separate rows computes it O times: with one-token options plus EOS (the letters of a
multiple-choice question, S = 2) that is 3 of every 8 decoder positions, and their full-vocabulary
logits. Here one decoder row per input holds `L = 1 + O * (S - 1)` positions:

    position 0                       the start token, shared by all options (depth 0)
    position 1 + o * (S - 1) + d     option o's input token y_d (depth d + 1)

Self-attention lets a position see the start and the earlier positions of its own option only,
with the relative position of a chain (key depth - query depth), so each option attends exactly
as it would in a row of its own; the logits that predict `y_s` of option `o` are read at
`read_index[o, s]` (the start for s = 0, the option's position of depth s otherwise).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


@dataclasses.dataclass(frozen=True, eq=False)
class DecoderLayout:
  """Static self-attention structure of a decoder row (numpy, fixed at trace time).

  Attributes:
    relative_position: `[S, S] int32`, key depth minus query depth (T5's `memory - query`).
    visible: `[S, S] bool`, True where query i may attend to key j.
  """

  relative_position: np.ndarray
  visible: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class SharedStartLayout:
  """The shared-start tree of O options of S tokens (see the module docstring).

  Attributes:
    num_options: O.
    option_length: S (target tokens per option, EOS included, padded).
    decoder: the self-attention structure over the `L = 1 + O * (S - 1)` positions.
    token_index: `[O, S - 1] int32`: position of decoder input `y_d` of option `o`.
    read_index: `[O, S] int32`: position whose logits predict `y_s` of option `o`.
  """

  num_options: int
  option_length: int
  decoder: DecoderLayout
  token_index: np.ndarray
  read_index: np.ndarray

  @property
  def length(self) -> int:
    """L, the decoder positions of one row."""
    return 1 + self.num_options * (self.option_length - 1)


@functools.lru_cache(maxsize=64)
def shared_start_layout(num_options: int, option_length: int) -> SharedStartLayout:
  """Builds (and caches) the layout for O options of S target tokens each."""
  if num_options < 1 or option_length < 1:
    raise ValueError(f"need O >= 1 options of S >= 1 tokens, got O={num_options} S={option_length}")
  o, s = num_options, option_length
  token_index = 1 + np.arange(o)[:, None] * (s - 1) + np.arange(s - 1)[None, :]  # [O, S-1]
  length = 1 + o * (s - 1)
  depth = np.zeros(length, np.int32)
  owner = np.full(length, -1, np.int32)  # -1: the shared start
  depth[token_index] = np.arange(1, s)[None, :]
  owner[token_index] = np.arange(o)[:, None]
  same_chain = (owner[:, None] == owner[None, :]) & (depth[None, :] <= depth[:, None])
  visible = same_chain | (owner[None, :] == -1)
  relative_position = (depth[None, :] - depth[:, None]).astype(np.int32)
  read_index = np.concatenate([np.zeros((o, 1), np.int64), token_index], axis=1)
  return SharedStartLayout(
    num_options=o,
    option_length=s,
    decoder=DecoderLayout(relative_position=relative_position, visible=visible),
    token_index=token_index.astype(np.int32),
    read_index=read_index.astype(np.int32),
  )


def decoder_inputs(layout: SharedStartLayout, option_ids: Array, start_id: int) -> Array:
  """option_ids: `[B, O, S] int32` (EOS included, 0-padded) -> decoder inputs `[B, L] int32`."""
  b = option_ids.shape[0]
  chains = option_ids[:, :, : layout.option_length - 1].reshape(b, -1)  # [B, O * (S - 1)]
  start = jnp.full((b, 1), start_id, dtype=option_ids.dtype)
  return jnp.concatenate([start, chains], axis=1)


def option_token_log_probs(layout: SharedStartLayout, logits: Array, option_ids: Array) -> Array:
  """Reads every option token's log-prob off the shared row.

  Args:
    logits: `[B, L, V]` decoder logits of `decoder_inputs(layout, option_ids, ...)`.
    option_ids: `[B, O, S] int32`.

  Returns:
    `[B, O, S] float32` log p(y_s | y_<s, x) (unmasked: padding positions hold garbage values).
  """
  b, o, s = option_ids.shape
  logits = logits.astype(jnp.float32)
  lse = jax.nn.logsumexp(logits, axis=-1)  # [B, L]: the normaliser, once per shared position
  read = jnp.asarray(layout.read_index.reshape(-1))  # [O * S]
  flat = logits.reshape(b * logits.shape[1], logits.shape[2])
  rows = (jnp.arange(b)[:, None] * logits.shape[1] + read[None, :]).reshape(-1)
  picked = flat[rows, option_ids.reshape(-1)].reshape(b, o, s)
  return picked - lse[:, read].reshape(b, o, s)
