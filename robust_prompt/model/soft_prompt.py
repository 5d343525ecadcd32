"""Soft prompts: initializers, the prompt parameter, prepending it to inputs, and `.npy` IO.

A soft prompt is `P` vectors of width `H` (= `d_model`) placed before the encoder's input
embeddings (Lester et al., 2021). Making the prompt (`init_prompt`, `SoftPrompt`) is kept separate
from combining it with an input (`prepend_prompt`), so that evaluation can load a trained prompt
from a `.npy` file and prepend it without any training code.

Initializers follow Flax's signature `init(rng, shape, dtype) -> [P, H]`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Initializer = Callable[[jax.Array, Sequence[int], jnp.dtype], jax.Array]

# Logical axes of the prompt parameter; `partitioning.DEFAULT_RULES` maps both to None, so the
# prompt is replicated (it is tiny, and every data shard needs all of it).
PROMPT_AXES = ("prompt", "prompt_embed")


def _check_shape(shape: Sequence[int], what: str) -> tuple[int, int]:
  if len(shape) != 2:
    raise ValueError(f"{what}: a soft prompt has shape [P, H]; got {tuple(shape)}")
  return int(shape[0]), int(shape[1])


def uniform(scale: float = 0.5) -> Initializer:
  """Uniform in `[-scale, scale]` (Lester et al. use 0.5 for random initialisation)."""

  def init(rng: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    _check_shape(shape, "uniform")
    return jax.random.uniform(rng, tuple(shape), dtype, minval=-scale, maxval=scale)

  return init


def from_vocab(embedding, num_ids: int | None = None) -> Initializer:
  """Copies rows of the token embedding, chosen at random (sampled with `rng`).

  Args:
    embedding: `[V, H]` the model's `token_embedder/embedding`.
    num_ids: sample only among the first `num_ids` ids (e.g. 5000, the most frequent
      SentencePiece pieces, as in Lester et al.); None = all `V` rows.
  """
  num_rows = int(embedding.shape[0]) if num_ids is None else int(num_ids)
  if not 0 < num_rows <= embedding.shape[0]:
    raise ValueError(f"from_vocab: num_ids={num_ids} must be in [1, {embedding.shape[0]}]")

  def init(rng: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    p, h = _check_shape(shape, "from_vocab")
    if h != embedding.shape[1]:
      raise ValueError(f"from_vocab: prompt width {h} != embedding width {embedding.shape[1]}")
    ids = jax.random.randint(rng, (p,), 0, num_rows)
    return jnp.asarray(embedding)[ids].astype(dtype)

  return init


def from_text(embedding, token_ids: Sequence[int]) -> Initializer:
  """Embeds a piece of text (e.g. an instruction), tiled or truncated to `P` tokens.

  Args:
    embedding: `[V, H]` the model's token embedding.
    token_ids: ids of the text (e.g. `vocab.encode(text)`); must not be empty.
  """
  token_ids = np.asarray(list(token_ids), dtype=np.int32)
  if token_ids.size == 0:
    raise ValueError("from_text: the text encodes to no tokens; give a non-empty text")

  def init(rng: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    del rng  # deterministic
    p, h = _check_shape(shape, "from_text")
    if h != embedding.shape[1]:
      raise ValueError(f"from_text: prompt width {h} != embedding width {embedding.shape[1]}")
    ids = np.resize(token_ids, p)  # repeats the text when it is shorter than P
    return jnp.asarray(embedding)[ids].astype(dtype)

  return init


def from_npy(path: str | os.PathLike) -> Initializer:
  """Starts from a saved prompt (`.npy`, `[P, H]`), e.g. one trained on another benchmark."""

  def init(rng: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    del rng
    value = load_prompt(path)
    if tuple(value.shape) != tuple(shape):
      raise ValueError(
        f"{path}: the saved prompt has shape {tuple(value.shape)} but [P, H] = {tuple(shape)} "
        "is needed; set the prompt length to match or start from another initializer"
      )
    return jnp.asarray(value, dtype)

  return init


class SoftPrompt(nn.Module):
  """Holds the soft prompt parameter `prompt: [P, H]` with logical axes (prompt, prompt_embed)."""

  length: int
  width: int
  init_fn: Initializer = uniform()
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self) -> jax.Array:
    return self.param(
      "prompt",
      nn.with_logical_partitioning(self.init_fn, PROMPT_AXES),
      (self.length, self.width),
      self.param_dtype,
    )


def init_prompt(
  rng: jax.Array, length: int, width: int, init_fn: Initializer | None = None, dtype=jnp.float32
) -> jax.Array:
  """Makes a `[P, H]` prompt without Flax boxing (for functional code and tests)."""
  if length <= 0:
    raise ValueError(f"prompt length must be positive; got {length}")
  return (init_fn or uniform())(rng, (length, width), dtype)


def prepend_prompt(prompt: jax.Array, embeds: jax.Array, mask: jax.Array):
  """Places the prompt before every row's input embeddings.

  Args:
    prompt: `[P, H]` soft prompt.
    embeds: `[B, T, H]` input token embeddings.
    mask: `[B, T]` 1 for real tokens.

  Returns:
    `(embeds [B, P+T, H], mask [B, P+T])`; the prompt positions are always attended to.
  """
  if prompt.ndim != 2 or prompt.shape[-1] != embeds.shape[-1]:
    raise ValueError(
      f"prompt of shape {tuple(prompt.shape)} does not fit embeddings of width {embeds.shape[-1]}"
    )
  batch = embeds.shape[0]
  tiled = jnp.broadcast_to(prompt.astype(embeds.dtype), (batch, *prompt.shape))
  prompt_mask = jnp.ones((batch, prompt.shape[0]), dtype=mask.dtype)
  return jnp.concatenate([tiled, embeds], axis=1), jnp.concatenate([prompt_mask, mask], axis=1)


def save_prompt(path: str | os.PathLike, prompt) -> None:
  """Writes the prompt as a float32 `.npy` of shape `[P, H]` (atomically: tmp file + rename)."""
  value = np.asarray(jax.device_get(prompt), dtype=np.float32)
  if value.ndim != 2:
    raise ValueError(f"a soft prompt has shape [P, H]; got {value.shape}")
  path = os.fspath(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}.npy"  # per process: two writers never share a temporary
  np.save(tmp, value)
  os.replace(tmp, path)


def load_prompt(path: str | os.PathLike, width: int | None = None) -> np.ndarray:
  """Reads a `[P, H]` prompt; checks `H == width` when given (the model's d_model)."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such prompt file (expected a .npy of shape [P, H])")
  if os.path.getsize(path) == 0:
    raise ValueError(f"{path}: an empty (0-byte) file, not a prompt; was its writing cut off?")
  try:
    value = np.load(path, allow_pickle=False)
  except (ValueError, EOFError, OSError) as e:
    raise ValueError(f"{path}: not a numpy .npy array ({e})") from e
  if isinstance(value, np.lib.npyio.NpzFile):
    names = list(value.files)
    value.close()
    raise ValueError(
      f"{path}: an .npz archive (arrays {names}), not one .npy prompt; save the [P, H] array "
      "alone with numpy.save"
    )
  if value.ndim != 2:
    raise ValueError(f"{path}: a soft prompt has shape [P, H]; this file holds {value.shape}")
  if width is not None and value.shape[1] != width:
    raise ValueError(
      f"{path}: prompt width {value.shape[1]} does not match the model's d_model {width}; "
      "was it trained for another model?"
    )
  return value.astype(np.float32)


INITIALIZERS = ("uniform", "from_vocab", "from_text", "from_npy")


def initializer_by_name(
  name: str,
  *,
  embedding=None,
  token_ids: Sequence[int] | None = None,
  scale: float = 0.5,
  num_ids: int | None = None,
  path: str | os.PathLike | None = None,
) -> Initializer:
  """Builds one of `INITIALIZERS` from settings (what the CLI's `prompt.*` gin names hold).

  Args:
    name: "uniform" (`scale`), "from_vocab" (`embedding`, `num_ids`), "from_text"
      (`embedding`, `token_ids`) or "from_npy" (`path`).
  """
  if name == "uniform":
    return uniform(scale)
  if name in ("from_vocab", "from_text") and embedding is None:
    raise ValueError(f"prompt initializer {name!r} needs the model's token embedding")
  if name == "from_vocab":
    return from_vocab(embedding, num_ids)
  if name == "from_text":
    if token_ids is None:
      raise ValueError("prompt initializer 'from_text' needs a text (prompt.text = '...')")
    return from_text(embedding, token_ids)
  if name == "from_npy":
    if path is None:
      raise ValueError("prompt initializer 'from_npy' needs a path (prompt.path or --prompt)")
    return from_npy(path)
  raise ValueError(f"unknown prompt initializer {name!r}; choose one of {INITIALIZERS}")


@dataclasses.dataclass(frozen=True)
class PromptSettings:
  """The soft prompt's length and initializer (gin: `prompt.*`), validated once, here.

  Attributes:
    length: P, the number of prompt vectors (ignored for "from_npy": the file decides).
    init: one of `INITIALIZERS`.
    scale: the range of "uniform".
    num_vocab_ids: "from_vocab" samples among the first N ids (None: all).
    text: the text that "from_text" embeds.
    path: the `.npy` that "from_npy" reads.
  """

  length: int = 100
  init: str = "from_vocab"
  scale: float = 0.5
  num_vocab_ids: int | None = 5000
  text: str | None = None
  path: str | None = None

  def __post_init__(self):
    if self.init not in INITIALIZERS:
      raise ValueError(f"prompt.init {self.init!r} is not one of {', '.join(INITIALIZERS)}")
    if not isinstance(self.length, int) or self.length < 1:
      raise ValueError(f"prompt.length must be a positive integer, got {self.length!r}")
    if self.scale <= 0:
      raise ValueError(f"prompt.scale must be > 0, got {self.scale!r}")
    if self.num_vocab_ids is not None and self.num_vocab_ids < 1:
      raise ValueError(f"prompt.num_vocab_ids must be >= 1 or None, got {self.num_vocab_ids!r}")


def make_initializer(
  settings: PromptSettings, embedding=None, encode_text: Callable[[str], list[int]] | None = None
) -> tuple[Initializer, int]:
  """`(initializer, P)` for `settings`; a saved prompt ("from_npy") decides P itself.

  Args:
    settings: validated prompt settings.
    embedding: the model's `[V, H]` token embedding (for "from_vocab" / "from_text").
    encode_text: the vocabulary's `encode` (for "from_text").

  Raises:
    ValueError: a setting the initializer needs is missing, or the file does not fit.
  """
  length = settings.length
  if settings.init == "from_npy":
    if not settings.path:
      raise ValueError("prompt.init = 'from_npy' needs a file: pass --prompt PATH")
    width = None if embedding is None else embedding.shape[1]
    length = load_prompt(settings.path, width=width).shape[0]
  num_ids = settings.num_vocab_ids
  if num_ids is not None and embedding is not None:
    num_ids = min(num_ids, embedding.shape[0])
  token_ids = None
  if settings.text:
    if encode_text is None:
      raise ValueError("prompt.text needs the model's vocabulary")
    token_ids = list(encode_text(settings.text))
  init_fn = initializer_by_name(
    settings.init,
    embedding=embedding,
    token_ids=token_ids,
    scale=settings.scale,
    num_ids=num_ids,
    path=settings.path,
  )
  return init_fn, length


def prompt_digest(path: str | os.PathLike) -> str:
  """A short content digest of a prompt file: its label in results (two files, two labels)."""
  return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()[:12]
