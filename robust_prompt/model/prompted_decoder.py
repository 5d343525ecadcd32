"""The decoder-only family (Llama, Mistral, Qwen2) behind the prompted-model API (`prompted.py`).

Token conventions (lm-evaluation-harness's, by default; docs/metrics.md "Decoder-only models"):

* The context is the rendered input with its trailing whitespace removed
  (`move_trailing_whitespace`), tokenized as the model's tokenizer does (BOS first for Llama and
  Mistral, nothing for Qwen2; an EOS the tokenizer would append is not put between a context and
  its continuation). An empty context is the EOS token, as in the harness. Truncation keeps the
  BOS and the *last* tokens: a continuation follows the end of the context.
* An option (or a `score` target) is a continuation: `whole = tokens(context + moved whitespace +
  target_delimiter + option)`, and the option's ids are `whole[len(tokens(context)):]`, context
  and continuation tokenized together and split where the context ends. No EOS unless
  `append_eos`. `option_encoding="standalone"` tokenizes each option alone instead (the
  tokenizer's leading BOS dropped), which is what the original robustness study scored Alpaca on.
* `encode_targets` (cross-entropy targets, without the input at hand): `tokens(target_delimiter +
  target)`, plus EOS with `append_eos`.

The context pass runs once per batch (`context`): the soft prompt `[P, H]` goes after BOS (at the
front when an input has none), positions count real tokens only, and every layer's keys and values
are kept. Continuations attend to those keys and values: the O options of an input are packed in
ONE row (`option_layout.shared_start_layout`'s chains, without its start position, which is the
context's last position here), each option token seeing the context and its own option's earlier
tokens only; the first token of every option is scored off the context's last logits, computed
once. Greedy decoding writes into a KV cache after the context.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from robust_prompt import vocab as vocab_lib
from robust_prompt.model import option_layout, prompted, scoring
from robust_prompt.model.attention import mask_to_bias
from robust_prompt.model.decoder import (
  KV,
  Decoder,
  causal_mask_bias,
  check_window,
  extend_kv,
  positions_from_mask,
)
from robust_prompt.model.decoder_config import DecoderConfig

Array = jax.Array

OPTION_ENCODINGS = ("continuation", "standalone")


class DecoderContext(NamedTuple):
  """The context pass of a batch (C = P + T positions with a soft prompt, else T).

  Attributes:
    kv: per layer, the rotated keys and values `[B, C, K, D]`.
    mask: `[B, C]` 1 on real positions (prompt and input tokens).
    lengths: `[B] int32` real positions: the position id of a continuation's first token.
    last: `[B] int32` index of the last real position.
    hidden: `[B, C, H]` last-layer states after the final norm.
    last_logits: `[B, V] float32` the next-token logits after the context.
    is_prompt: `[B, C] bool` the soft prompt's positions.
  """

  kv: tuple[KV, ...]
  mask: Array
  lengths: Array
  last: Array
  hidden: Array
  last_logits: Array
  is_prompt: Array


def _as_decoder_vocab(vocab) -> vocab_lib.DecoderVocabulary:
  if not isinstance(vocab, vocab_lib.DecoderVocabulary):
    raise TypeError(
      f"a decoder-only model needs its own tokenizer (tokenizer.json or tokenizer.model, loaded "
      f"with vocab.load_decoder_vocabulary), got {vocab}"
    )
  return vocab


@dataclasses.dataclass(frozen=True)
class PromptedDecoder(prompted.PromptedModel):
  """A decoder-only LM with an optional soft prompt after BOS.

  Attributes:
    config: the architecture.
    target_delimiter: put between the context and every option or target (harness: " ").
    append_eos: end options and targets with EOS (harness: no).
    move_trailing_whitespace: strip the context's trailing whitespace and start its
      continuations with it (harness: yes). Greedy decoding then also starts after the stripped
      context; turn it off to decode after the text exactly as rendered.
    option_encoding: "continuation" (harness) or "standalone" (each option tokenized alone
      without the tokenizer's leading BOS, as the robustness study did for `greedy_prefix`).
  """

  config: DecoderConfig
  target_delimiter: str = " "
  append_eos: bool = False
  move_trailing_whitespace: bool = True
  option_encoding: str = "continuation"
  family: ClassVar[str] = "decoder"

  def __post_init__(self):
    if self.option_encoding not in OPTION_ENCODINGS:
      raise ValueError(
        f"option_encoding {self.option_encoding!r} is not one of {', '.join(OPTION_ENCODINGS)}"
      )

  @property
  def module(self) -> Decoder:
    return Decoder(self.config)

  # -- host side -----------------------------------------------------------------------------

  def _split(self, text: str) -> tuple[str, str]:
    """(context, whitespace moved into the continuations)."""
    if not self.move_trailing_whitespace:
      return text, ""
    context = text.rstrip()
    return context, text[len(context) :]

  def _eos(self, vocab: vocab_lib.DecoderVocabulary) -> int:
    return vocab.eos_id if vocab.eos_id is not None else self.config.eos_token_id

  def _with_eos(self, vocab, ids: list[int], max_length: int | None) -> list[int]:
    if self.append_eos:
      if max_length is not None:
        ids = ids[: max_length - 1]
      return [*ids, self._eos(vocab)]
    return ids if max_length is None else ids[:max_length]

  def encode_inputs(self, vocab, texts: Sequence[str], max_length: int | None) -> list[list[int]]:
    """The contexts: `prefix_ids + tokens(context)`, keeping the prefix and the last tokens."""
    vocab = _as_decoder_vocab(vocab)
    prefix = list(vocab.prefix_ids)
    if max_length is not None and max_length <= len(prefix):
      raise ValueError(f"max_length {max_length} leaves no room for the input after {prefix}")
    out = []
    for text in texts:
      plain = vocab.encode(self._split(text)[0])
      # A chat template writes BOS itself: keep one.
      has_prefix = bool(prefix) and plain[: len(prefix)] == prefix
      body = plain[len(prefix) :] if has_prefix else plain
      if not prefix and not body:
        body = [self._eos(vocab)]  # the harness's context for an empty input
      if max_length is not None and len(prefix) + len(body) > max_length:
        body = body[len(body) - (max_length - len(prefix)) :]
      out.append([*prefix, *body])
    return out

  def encode_options(
    self, vocab, texts: Sequence[str], options: Sequence[Sequence[str]], max_length: int | None
  ) -> list[list[list[int]]]:
    """Per input, its options as continuations of its context (see the module docstring)."""
    vocab = _as_decoder_vocab(vocab)
    out = []
    for text, opts in zip(texts, options):
      context, moved = self._split(text)
      context_len = len(vocab.encode(context))
      rows = []
      for option in opts:
        if self.option_encoding == "standalone":
          ids = vocab.encode_for_model(option)
          prefix = list(vocab.prefix_ids)
          ids = ids[len(prefix) :] if prefix and ids[: len(prefix)] == prefix else ids
          suffix = list(vocab.suffix_ids)
          ids = ids[: len(ids) - len(suffix)] if suffix and ids[-len(suffix) :] == suffix else ids
        else:
          whole = vocab.encode(context + moved + self.target_delimiter + option)
          ids = whole[context_len:]
        if not ids and not self.append_eos:
          raise ValueError(
            f"option {option!r} of input {text[-60:]!r} tokenizes to no tokens after the context "
            "(an empty option with an empty target_delimiter?); it cannot be scored"
          )
        rows.append(self._with_eos(vocab, ids, max_length))
      out.append(rows)
    return out

  def encode_targets(self, vocab, targets: Sequence[str], max_length: int | None):
    """`tokens(target_delimiter + target)` (+ EOS with `append_eos`), truncated at the end."""
    vocab = _as_decoder_vocab(vocab)
    return [
      self._with_eos(vocab, vocab.encode(self.target_delimiter + t), max_length) for t in targets
    ]

  # -- device side ---------------------------------------------------------------------------

  def _apply(self, params, *args, method, **kwargs):
    return self.module.apply({"params": params}, *args, method=method, **kwargs)

  def _insert_prompt(self, prompt: Array, embeds: Array, mask: Array, input_ids: Array):
    """Puts the `[P, H]` prompt after each row's BOS (at the front of a row without one).

    Returns:
      `(embeds [B, P+T, H], mask [B, P+T], is_prompt [B, P+T] bool)`.
    """
    b, t, h = embeds.shape
    p = prompt.shape[0]
    if prompt.ndim != 2 or prompt.shape[1] != h:
      raise ValueError(f"prompt of shape {tuple(prompt.shape)} does not fit width {h}")
    rows = jnp.broadcast_to(prompt.astype(embeds.dtype), (b, p, h))
    ones = jnp.ones((b, p), mask.dtype)
    bos = self.config.bos_token_id
    if bos is None:
      has_bos = jnp.zeros((b,), bool)
    else:
      has_bos = (input_ids[:, 0] == bos) & (mask[:, 0] > 0)
    front = jnp.concatenate([rows, embeds], axis=1)
    after_bos = jnp.concatenate([embeds[:, :1], rows, embeds[:, 1:]], axis=1)
    embeds = jnp.where(has_bos[:, None, None], after_bos, front)
    mask = jnp.where(
      has_bos[:, None],
      jnp.concatenate([mask[:, :1], ones, mask[:, 1:]], axis=1),
      jnp.concatenate([ones, mask], axis=1),
    )
    start = has_bos.astype(jnp.int32)[:, None]
    pos = jnp.arange(p + t)[None, :]
    return embeds, mask, (pos >= start) & (pos < start + p)

  def context(self, params, prompt, batch) -> DecoderContext:
    """The context pass over `input_ids` (right-padded), the soft prompt after BOS."""
    input_ids = batch["input_ids"]
    mask = jnp.asarray(batch["input_mask"]).astype(jnp.int32)
    embeds = self._apply(params, input_ids, method=Decoder.embed)
    if prompt is None:
      is_prompt = jnp.zeros(mask.shape, bool)
    else:
      embeds, mask, is_prompt = self._insert_prompt(prompt, embeds, mask, input_ids)
    b, c = mask.shape
    check_window(self.config, c)
    hidden, kv = self._apply(
      params, embeds, positions_from_mask(mask), causal_mask_bias(mask), method=Decoder.run
    )
    # The last real position (right padding: sum(mask) - 1; also right for other paddings).
    last = (c - 1 - jnp.argmax(mask[:, ::-1], axis=1)).astype(jnp.int32)
    last_hidden = hidden[jnp.arange(b), last][:, None]
    last_logits = self._apply(params, last_hidden, method=Decoder.logits)[:, 0]
    return DecoderContext(
      kv=kv,
      mask=mask,
      lengths=jnp.sum(mask, axis=1).astype(jnp.int32),
      last=last,
      hidden=hidden,
      last_logits=last_logits,
      is_prompt=is_prompt,
    )

  def _continue(
    self,
    params,
    ctx: DecoderContext,
    tokens: Array,
    offsets: np.ndarray,
    visible: np.ndarray,
    index: Array | None,
  ) -> Array:
    """Logits of continuation tokens fed after the context (teacher forcing).

    Args:
      tokens: `[R, L] int32` continuation tokens.
      offsets: `[L]` static, each token's position after the context's end (0 = right after).
      visible: `[L, L]` static bool, which continuation tokens each one sees (beside the context).
      index: `[R] int32` or None (R = B): row r continues context `index[r]`.

    Returns:
      `[R, L, V] float32`: position l's next-token logits.
    """
    kv, mask, lengths = ctx.kv, ctx.mask, ctx.lengths
    if index is not None:
      kv = jax.tree.map(lambda a: a[index], kv)
      mask, lengths = mask[index], lengths[index]
    r, length = tokens.shape
    c = mask.shape[1]
    check_window(self.config, c + int(np.max(offsets)) + 1)
    positions = lengths[:, None] + jnp.asarray(offsets, jnp.int32)[None, :]
    sees = jnp.concatenate(
      [
        jnp.broadcast_to(mask.astype(bool)[:, None, None, :], (r, 1, length, c)),
        jnp.broadcast_to(jnp.asarray(visible)[None, None], (r, 1, length, length)),
      ],
      axis=-1,
    )
    embeds = self._apply(params, tokens, method=Decoder.embed)
    hidden, _ = self._apply(
      params, embeds, positions, mask_to_bias(sees), prefix=kv, method=Decoder.run
    )
    return self._apply(params, hidden, method=Decoder.logits)

  def _target_logits(self, params, ctx: DecoderContext, target_ids: Array, index) -> Array:
    """`[R, S, V]`: logits predicting each target token (the first from the context's end)."""
    first = ctx.last_logits if index is None else ctx.last_logits[index]
    s = target_ids.shape[1]
    if s == 1:
      return first[:, None]
    rest = self._continue(
      params,
      ctx,
      target_ids[:, :-1],
      np.arange(s - 1),
      np.tril(np.ones((s - 1, s - 1), bool)),
      index,
    )
    return jnp.concatenate([first[:, None], rest], axis=1)

  def represent(self, params, prompt, batch, *, pooling="input", context=None) -> Array:
    """Masked mean of the last layer's (final-normed) states -> `[B, H] float32`."""
    prompted.check_pooling(pooling)
    ctx = context if context is not None else self.context(params, prompt, batch)
    real = ctx.mask.astype(bool)
    if pooling == "input":
      chosen = real & ~ctx.is_prompt
    elif pooling == "prompt":
      chosen = real & ctx.is_prompt
    elif pooling == "last":
      chosen = jnp.arange(real.shape[1])[None, :] == ctx.last[:, None]
    else:
      chosen = real
    m = chosen.astype(jnp.float32)[..., None]
    return (ctx.hidden.astype(jnp.float32) * m).sum(1) / jnp.maximum(m.sum(1), 1.0)

  def option_log_probs(self, params, prompt, batch, *, mode="sum", context=None) -> Array:
    """`[B, O]` option scores: all options of an input in one continuation row, or greedy."""
    prompted.check_mode(mode)
    ctx = context if context is not None else self.context(params, prompt, batch)
    option_ids, option_mask = batch["option_ids"], batch["option_mask"]
    if mode == "greedy_prefix":
      steps = min(option_ids.shape[-1], scoring.GREEDY_PREFIX_MAX_STEPS)
      greedy, step_lp = self._greedy(params, ctx, steps, option_ids=option_ids)
      scores = scoring.greedy_prefix_scores(step_lp, greedy, option_mask, self.eos_id)
    else:
      _, o, s = option_ids.shape
      layout = option_layout.shared_start_layout(o, s)
      logits = ctx.last_logits[:, None]  # the layout's shared start: the context's end
      if s > 1:
        chains = option_layout.decoder_inputs(layout, option_ids, 0)[:, 1:]  # [B, O * (S - 1)]
        depth = layout.decoder.relative_position[0, 1:]  # 1 .. S-1 along each chain
        rest = self._continue(params, ctx, chains, depth - 1, layout.decoder.visible[1:, 1:], None)
        logits = jnp.concatenate([logits, rest], axis=1)
      lp = option_layout.option_token_log_probs(layout, logits, option_ids)
      scores = scoring.reduce_option_log_probs(lp, option_mask, mode)
    return scoring.mask_dummy_options(scores, option_mask)

  def target_scores(self, params, prompt, batch, *, context=None):
    """Sum log-prob and token count of each `[R, S]` target continuing input `target_index`."""
    ctx = context if context is not None else self.context(params, prompt, batch)
    target_ids, target_mask = batch["target_ids"], jnp.asarray(batch["target_mask"])
    logits = self._target_logits(params, ctx, target_ids, batch.get("target_index"))
    lp = scoring.token_log_probs(logits, target_ids)
    weights = target_mask.astype(jnp.float32)
    return jnp.sum(lp * weights, axis=-1), jnp.sum(target_mask.astype(jnp.int32), axis=-1)

  def greedy(self, params, prompt, batch, steps: int, *, context=None) -> Array:
    ctx = context if context is not None else self.context(params, prompt, batch)
    tokens, _ = self._greedy(params, ctx, steps)
    return tokens

  def logits(self, params, prompt, batch, *, context=None) -> Array:
    """Teacher-forced `[B, S, V]` logits of `target_ids` continuing each context."""
    ctx = context if context is not None else self.context(params, prompt, batch)
    return self._target_logits(params, ctx, batch["target_ids"], None)

  def _greedy(self, params, ctx: DecoderContext, steps: int, *, option_ids=None):
    """Greedy decoding after the context with a KV cache, as HF `generate(do_sample=False)`.

    Token k is fed at cache slot `C + k - 1` with position `lengths + k - 1`; it sees the
    context's real positions and the tokens generated before it. A row is PAD after any of the
    config's EOS ids.

    Returns:
      `(tokens [B, K] int32, option_step_log_probs [B, O, K] float32 or None)` as
      `decoding.greedy_decode` (the `greedy_prefix` mode reads the latter).
    """
    cfg = self.config
    b, c = ctx.mask.shape
    check_window(cfg, c + steps - 1)
    pad = cfg.pad_token_id
    eos_ids = jnp.asarray(cfg.eos_token_ids, jnp.int32)
    with_options = option_ids is not None
    num_o = option_ids.shape[1] if with_options else 0
    if with_options:
      option_ids = option_ids[:, :, :steps]
    cache = tuple(extend_kv(kv, steps - 1) for kv in ctx.kv)
    slots = jnp.arange(c + steps - 1)
    context_visible = jnp.concatenate(
      [ctx.mask.astype(bool), jnp.zeros((b, steps - 1), bool)], axis=1
    )

    def pick(logits, done, k, tokens, step_lp):
      token = jnp.where(done, pad, jnp.argmax(logits, axis=-1).astype(jnp.int32))
      tokens = jax.lax.dynamic_update_slice(tokens, token[:, None], (0, k))
      if with_options:
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        want = jax.lax.dynamic_index_in_dim(option_ids, k, axis=2, keepdims=False)  # [B, O]
        picked = jnp.take_along_axis(log_probs, want, axis=-1)
        step_lp = jax.lax.dynamic_update_slice(step_lp, picked[:, :, None], (0, 0, k))
      done = done | jnp.any(token[:, None] == eos_ids[None, :], axis=-1)
      return token, done, tokens, step_lp

    tokens = jnp.full((b, steps), pad, jnp.int32)
    step_lp = jnp.zeros((b, num_o, steps), jnp.float32)
    token, done, tokens, step_lp = pick(ctx.last_logits, jnp.zeros((b,), bool), 0, tokens, step_lp)

    def cond(state):
      k, _, _, done, _, _ = state
      return (k < steps) & ~jnp.all(done)

    def body(state):
      k, token, cache, done, tokens, step_lp = state
      slot = c + k - 1
      sees = context_visible | ((slots >= c) & (slots <= slot))[None, :]
      embeds = self._apply(params, token[:, None], method=Decoder.embed)
      hidden, cache = self._apply(
        params,
        embeds,
        (ctx.lengths + k - 1)[:, None],
        mask_to_bias(sees)[:, None, None, :],
        cache=cache,
        cache_index=slot,
        method=Decoder.run,
      )
      logits = self._apply(params, hidden, method=Decoder.logits)[:, 0]
      token, done, tokens, step_lp = pick(logits, done, k, tokens, step_lp)
      return k + 1, token, cache, done, tokens, step_lp

    init = (jnp.int32(1), token, cache, done, tokens, step_lp)
    _, _, _, _, tokens, step_lp = jax.lax.while_loop(cond, body, init)
    return tokens, (step_lp if with_options else None)


prompted.register(DecoderConfig, PromptedDecoder)
