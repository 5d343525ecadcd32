"""The prompted-model API: the one seam between a model family and eval, score, train and aot.

Every command reaches a model only through a `PromptedModel`. A model family (T5, decoder-only)
is one subclass; eval's engine, the `score` command, the training objective and `aot` call these
methods and nothing below them. The soft prompt is always a separate argument (`[P, H]` or
None), never a leaf of the frozen parameter tree, so the frozen weights carry no optimizer state.

Batches are dicts of arrays (shape letters: docs/design.md):

| key | shape | used by |
| --- | --- | --- |
| `input_ids`, `input_mask` | `[B, T]` | every method: the rendered input (0-padded, mask 1 = real) |
| `option_ids`, `option_mask` | `[B, O, S]` | `option_log_probs` (a dummy option is all-0 mask) |
| `target_ids`, `target_mask` | `[B, S]` | `logits` (one target per input) |
| `target_ids`, `target_mask`, `target_index` | `[R, S]`, `[R]` | `target_scores`: target r of input `target_index[r]` |
| `prefix_ids` (optional) | `[B, T_s]` | `context`: the leading tokens every real row shares (each row a copy), run once; its static length `T_s` is the family's choice (`with_shared_prefix`) |

Token conventions (what `encode_*` produce) belong to the family: T5 appends EOS to inputs and
targets; a decoder-only model puts BOS first and scores continuations of the context.

`with_shared_prefix(batch, P)` (host side, numpy) adds `prefix_ids` where the family can run a prefix
shared by all rows once (decoder-only: the keys and values of BOS, the soft prompt and a shared
instruction); T5 returns the batch unchanged (its encoder is bidirectional). A batch without the
key is always valid, so callers that do not call it (training) get the plain pass.

`context(params, prompt, batch)` runs the input once (T5: the encoder; decoder-only: the context
pass). Every method takes an optional `context=` so that a caller needing several outputs of one
batch (the training objective: CE, representations and option scores) runs the input once.

Every method is a pure function of its arguments and is jitted by its caller, with the
`PromptedModel` itself static (instances are frozen dataclasses, hashable by their config).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from robust_prompt.model import scoring

Array = jax.Array
Batch = dict[str, Any]

SCORE_MODES = ("sum", "mean", "greedy_prefix")
POOLINGS = ("input", "mean", "prompt", "last")


@dataclasses.dataclass(frozen=True)
class PromptedModel(abc.ABC):
  """A frozen model family behind one interface (see the module docstring).

  Attributes:
    config: the family's frozen config dataclass (`T5Config`, `DecoderConfig`).
  """

  config: Any
  family: ClassVar[str] = ""

  # -- the module and its parameters ------------------------------------------------------------

  @property
  @abc.abstractmethod
  def module(self) -> Any:
    """The Flax module (for `init`, abstract shapes and logical partition specs)."""

  @property
  def d_model(self) -> int:
    """H: the width of the soft prompt's vectors."""
    return int(self.config.d_model)

  @property
  def token_embedding_path(self) -> tuple[str, ...]:
    """Where the `[V, H]` token embedding sits in the parameter tree (prompt initializers)."""
    return ("token_embedder", "embedding")

  # -- host side: tokenization -------------------------------------------------------------------

  @abc.abstractmethod
  def encode_inputs(self, vocab, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids of rendered inputs, truncated to `max_length` the family's way."""

  @abc.abstractmethod
  def encode_options(
    self, vocab, texts: Sequence[str], options: Sequence[Sequence[str]], max_length: int
  ) -> list[list[list[int]]]:
    """Per input, the token ids of each option (as scored by `option_log_probs`)."""

  @abc.abstractmethod
  def encode_targets(self, vocab, targets: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids of target strings (CE targets, `target_scores`)."""

  def with_shared_prefix(self, batch: Batch, prompt_length: int = 0) -> Batch:
    """Host side: `batch` plus `prefix_ids [B, T_s]` where the family runs a shared prefix once.

    `prompt_length` is P of the soft prompt the batch will run with (0: none). Results are the
    same with and without the key (up to float rounding). Default: `batch` unchanged.
    """
    del prompt_length
    return batch

  # -- device side: the operations ---------------------------------------------------------------

  @abc.abstractmethod
  def context(self, params, prompt: Array | None, batch: Batch) -> Any:
    """Runs the input (with the soft prompt) once; the other methods accept the result."""

  @abc.abstractmethod
  def represent(
    self, params, prompt: Array | None, batch: Batch, *, pooling: str = "input", context=None
  ) -> Array:
    """`[B, H] float32` pooled representations for the alignment loss.

    `pooling`: "input" (mean over input positions, prompt excluded), "mean" (prompt and input),
    "prompt" (prompt positions only) or "last" (the last input position).
    """

  def option_log_probs(
    self, params, prompt: Array | None, batch: Batch, *, mode: str = "sum", context=None
  ) -> Array:
    """`[B, O] float32` rank-classification scores of `option_ids`; -inf for dummy options.

    `mode`: "sum" (log-likelihood), "mean" (per token) or "greedy_prefix" (see `eval/rank.py`).
    The family scores the option tokens (`_option_token_log_probs`) or decodes greedily
    (`_greedy`); the modes are the same for every family.
    """
    check_mode(mode)
    ctx = context if context is not None else self.context(params, prompt, batch)
    option_ids, option_mask = batch["option_ids"], batch["option_mask"]
    if mode == "greedy_prefix":
      steps = min(option_ids.shape[-1], scoring.GREEDY_PREFIX_MAX_STEPS)
      greedy, step_lp = self._greedy(params, ctx, steps, option_ids=option_ids)
      scores = scoring.greedy_prefix_scores(step_lp, greedy, option_mask, self.eos_id)
    else:
      lp = self._option_token_log_probs(params, ctx, option_ids, option_mask)
      scores = scoring.reduce_option_log_probs(lp, option_mask, mode)
    return scoring.mask_dummy_options(scores, option_mask)

  @abc.abstractmethod
  def _option_token_log_probs(self, params, ctx, option_ids: Array, option_mask: Array) -> Array:
    """`[B, O, S] float32` log-prob of each `[B, O, S]` option token after the input `ctx`."""

  @abc.abstractmethod
  def target_scores(self, params, prompt: Array | None, batch: Batch, *, context=None):
    """`(sum_logprob [R] float32, num_tokens [R] int32)` of the `[R, S]` targets."""

  def greedy(self, params, prompt: Array | None, batch: Batch, steps: int, *, context=None):
    """`[B, steps] int32` greedy tokens (KV cache); a row is PAD after its EOS."""
    ctx = context if context is not None else self.context(params, prompt, batch)
    tokens, _ = self._greedy(params, ctx, steps)
    return tokens

  @abc.abstractmethod
  def _greedy(self, params, ctx, steps: int, *, option_ids: Array | None = None):
    """Greedy decoding of K = `steps` tokens after the input `ctx` (`context`'s result).

    Returns:
      `(tokens [B, K] int32, option_step_log_probs [B, O, K] float32 or None)` as
      `decoding.greedy_decode`: the latter scores `option_ids [B, O, S]` (S >= K) under each
      step's distribution (the `greedy_prefix` mode).
    """

  @abc.abstractmethod
  def logits(self, params, prompt: Array | None, batch: Batch, *, context=None) -> Array:
    """`[B, S, V] float32` teacher-forced logits of the `[B, S]` targets (cross-entropy)."""

  # -- ids -----------------------------------------------------------------------------------

  @property
  def pad_id(self) -> int:
    return int(self.config.pad_token_id)

  @property
  def eos_id(self) -> int:
    return int(self.config.eos_token_id)


_FAMILIES: dict[type, type[PromptedModel]] = {}


def register(config_type: type, model_type: type[PromptedModel]) -> None:
  """Makes `for_config` build `model_type` for configs of `config_type`."""
  _FAMILIES[config_type] = model_type


def for_config(config: Any, **options) -> PromptedModel:
  """The `PromptedModel` of a loaded model's config (the family follows the config's type).

  `options` set the family's scoring conventions (fields of its class, e.g. `append_eos`,
  `target_delimiter`); None values keep the family's defaults.

  Raises:
    TypeError: no family for the config, or an option the family does not have.
  """
  _register_builtin()
  options = {k: v for k, v in options.items() if v is not None}
  for config_type, model_type in _FAMILIES.items():
    if isinstance(config, config_type):
      fields = {f.name for f in dataclasses.fields(model_type)}
      unknown = sorted(set(options) - fields)
      if unknown:
        raise TypeError(f"the {model_type.family} family has no option(s) {unknown}")
      return model_type(config, **options)
  raise TypeError(f"no prompted-model family for a config of type {type(config).__name__}")


def _register_builtin() -> None:
  # Imported here: the implementations import this module.
  from robust_prompt.model import (
    prompted_decoder,  # noqa: F401
    prompted_t5,  # noqa: F401
  )


def check_mode(mode: str) -> str:
  if mode not in SCORE_MODES:
    raise ValueError(f"unknown score mode {mode!r}; choose one of {SCORE_MODES}")
  return mode


def check_pooling(pooling: str) -> str:
  if pooling not in POOLINGS:
    raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")
  return pooling


def masked_mean(states: Array, mask: Array) -> Array:
  """What `represent` returns: the mean of `states [B, T, H]` over `mask [B, T]` -> `[B, H]` f32.

  A row with no position chosen gives zeros.
  """
  m = mask.astype(jnp.float32)[..., None]
  return (states.astype(jnp.float32) * m).sum(1) / jnp.maximum(m.sum(1), 1.0)
