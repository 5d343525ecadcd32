"""The T5 family (T5 1.0, 1.1, Flan-T5, T0) behind the prompted-model API (`prompted.py`).

The soft prompt `[P, H]` goes before the encoder's input embeddings (Lester et al., 2021); the
context is the encoder output over `P + T` positions. Options and targets are decoder sequences
`tokens + [EOS]` (the Hugging Face `labels` convention); options of an input are scored in one
decoder row sharing the start position (`option_layout`), targets of the `score` command in
ragged rows that read their input through `encoder_index`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from robust_prompt import vocab as vocab_lib
from robust_prompt.model import decoding, prompted, scoring
from robust_prompt.model.config import T5Config
from robust_prompt.model.soft_prompt import prepend_prompt
from robust_prompt.model.t5 import T5

Array = jax.Array


class T5Context(NamedTuple):
  """The encoder pass of a batch: `encoded [B, P+T, H]`, `mask [B, P+T]`, `prompt_length` P."""

  encoded: Array
  mask: Array
  prompt_length: int


@dataclasses.dataclass(frozen=True)
class PromptedT5(prompted.PromptedModel):
  """T5 with an optional soft prompt before the encoder input."""

  config: T5Config
  # Options and targets end with EOS (the Hugging Face `labels` convention; also what T5 was
  # trained to emit). False: lm-evaluation-harness's convention of scoring the text only.
  append_eos: bool = True
  family: ClassVar[str] = "t5"

  @property
  def module(self) -> T5:
    return T5(self.config)

  # -- host side -----------------------------------------------------------------------------

  def encode_inputs(self, vocab, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """`vocab.encode(text) + [EOS]`, truncated keeping EOS."""
    return vocab_lib.encode_inputs(vocab, texts, max_length)

  def encode_options(
    self, vocab, texts: Sequence[str], options: Sequence[Sequence[str]], max_length: int
  ) -> list[list[list[int]]]:
    """Each option on its own (`tokens + [EOS]`): a T5 option does not depend on the input."""
    del texts
    return [self.encode_targets(vocab, opts, max_length) if opts else [] for opts in options]

  def encode_targets(self, vocab, targets: Sequence[str], max_length: int) -> list[list[int]]:
    if self.append_eos:
      return vocab_lib.encode_targets(vocab, targets, max_length)
    ids = [list(vocab.encode(t)) for t in targets]
    return [x[:max_length] if max_length is not None else x for x in ids]

  # -- device side ---------------------------------------------------------------------------

  def context(self, params, prompt, batch) -> T5Context:
    """Runs the encoder once over `[prompt; embed(input_ids)]`."""
    variables = {"params": params}
    input_ids, input_mask = batch["input_ids"], batch["input_mask"]
    module = self.module
    if prompt is None:
      encoded = module.apply(variables, input_ids, input_mask, method=T5.encode)
      return T5Context(encoded, input_mask, 0)
    embeds = module.apply(variables, input_ids, method=T5.embed)
    embeds, mask = prepend_prompt(prompt, embeds, input_mask)
    encoded = module.apply(variables, embeds, mask, method=T5.encode_embeds)
    return T5Context(encoded, mask, int(prompt.shape[0]))

  def represent(self, params, prompt, batch, *, pooling="input", context=None) -> Array:
    """Masked mean of the encoder output over the chosen positions -> `[B, H] float32`."""
    prompted.check_pooling(pooling)
    ctx = context if context is not None else self.context(params, prompt, batch)
    mask = ctx.mask
    is_prompt = (jnp.arange(mask.shape[1]) < ctx.prompt_length)[None, :]
    if pooling == "input":
      mask = jnp.where(is_prompt, 0, mask)
    elif pooling == "prompt":
      mask = jnp.where(is_prompt, mask, 0)
    elif pooling == "last":
      # The last real input position (T5 inputs end with EOS there).
      last = jnp.sum(mask, axis=1) - 1
      mask = (jnp.arange(mask.shape[1])[None, :] == last[:, None]).astype(mask.dtype)
    return prompted.masked_mean(ctx.encoded, mask)

  def _option_token_log_probs(self, params, ctx, option_ids, option_mask) -> Array:
    """The options of an input in one decoder row (shared start)."""
    return scoring.option_log_probs(
      self.module, params, ctx.encoded, ctx.mask, option_ids, option_mask
    )

  def _greedy(self, params, ctx, steps, *, option_ids=None):
    return decoding.greedy_decode(
      self.module, params, ctx.encoded, ctx.mask, steps, option_ids=option_ids
    )

  def target_scores(self, params, prompt, batch, *, context=None):
    """Sum log-prob (EOS included) and token count of each `[R, S]` target of `target_index`."""
    ctx = context if context is not None else self.context(params, prompt, batch)
    return scoring.score_with_encoded(
      self.module,
      params,
      ctx.encoded,
      ctx.mask,
      batch["target_ids"],
      batch["target_mask"],
      encoder_index=batch.get("target_index"),
    )

  def logits(self, params, prompt, batch, *, context=None) -> Array:
    """Teacher-forced `[B, S, V]` logits of `target_ids` (decoder inputs: `shift_right`)."""
    ctx = context if context is not None else self.context(params, prompt, batch)
    decoder_inputs = scoring.shift_right(batch["target_ids"], self.config.decoder_start_token_id)
    return self.module.apply(
      {"params": params},
      ctx.encoded,
      ctx.mask,
      decoder_inputs,
      batch["target_mask"],
      method=T5.decode,
    )


prompted.register(T5Config, PromptedT5)
