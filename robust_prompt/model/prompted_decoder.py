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

A prefix shared by every row of a batch runs once (`with_shared_prefix`, host side, then
`context`): BOS, the soft prompt after it, a prompt format's header and, in a batch of one
instruction's inputs, the instruction's text before its first placeholder are the same in every row
(the eval engine's batches mix a task's instructions, so mostly the first three; measured in
benchmarks/shared_prefix.py). `with_shared_prefix` takes the longest common token prefix of the
real rows (each row keeping at least one token of its own, so that its last logits stay its own),
rounds it down to `shared_prefix_buckets` (16, 24, 32, ...: each length is one more compiled shape)
and adds it to the batch as `prefix_ids [B, T_s]`; with a soft prompt of at least 16 vectors the
first token alone is shared too. `context` then runs `T_s + P` shared positions at batch 1 and each
row's `T - T_s` own tokens attending to their keys and values (positions continue after them), and
concatenates the two into the usual whole-context arrays (the broadcast copies cost memory, not
FLOPs), so every method reads the same `DecoderContext`. A batch without `prefix_ids` (training:
paraphrases share only BOS) takes the plain pass.
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

# The lengths a shared prefix is rounded down to (`PromptedDecoder.shared_prefix_length`), each
# one more static shape of the eval step: nothing under 16 tokens (a few tokens in common by
# chance would cost compilations, not save work), then steps of 8. On MMLU x 16 instructions this
# shares as much as steps of 8 from 8 and compiles as few shapes as steps of 16
# (benchmarks/shared_prefix.py).
SHARED_PREFIX_BUCKETS = tuple(range(16, 4097, 8))


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
    shared_prefix_buckets: the lengths (ascending) that a batch's shared leading tokens are
      rounded down to for `with_shared_prefix` (each a compiled shape); () turns it off.
    min_shared_fraction: the shared positions (prefix and prompt) must be at least this share
      of a row's `T + P` positions: below it, the extra compiled program costs more than the
      positions it saves (MMLU in the raw format shares ~0.1%: benchmarks/README.md).
  """

  config: DecoderConfig
  target_delimiter: str = " "
  append_eos: bool = False
  move_trailing_whitespace: bool = True
  option_encoding: str = "continuation"
  shared_prefix_buckets: tuple[int, ...] = SHARED_PREFIX_BUCKETS
  min_shared_fraction: float = 0.125
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

  def _prompt_layout(self, p: int, mask: Array, input_ids: Array) -> tuple[Array, Array, Array]:
    """Where a `[P, H]` prompt goes: after each row's BOS (at the front of a row without one).

    Returns:
      `(mask [B, P+T], is_prompt [B, P+T] bool, has_bos [B] bool)`.
    """
    b, t = mask.shape
    bos = self.config.bos_token_id
    if bos is None:
      has_bos = jnp.zeros((b,), bool)
    else:
      has_bos = (input_ids[:, 0] == bos) & (mask[:, 0] > 0)
    ones = jnp.ones((b, p), mask.dtype)
    mask = jnp.where(
      has_bos[:, None],
      jnp.concatenate([mask[:, :1], ones, mask[:, 1:]], axis=1),
      jnp.concatenate([ones, mask], axis=1),
    )
    start = has_bos.astype(jnp.int32)[:, None]
    pos = jnp.arange(p + t)[None, :]
    return mask, (pos >= start) & (pos < start + p), has_bos

  def _insert_prompt(self, prompt: Array, embeds: Array, mask: Array, input_ids: Array):
    """Puts the `[P, H]` prompt after each row's BOS (at the front of a row without one).

    Returns:
      `(embeds [B, P+T, H], mask [B, P+T], is_prompt [B, P+T] bool)`.
    """
    b, _, h = embeds.shape
    p = prompt.shape[0]
    if prompt.ndim != 2 or prompt.shape[1] != h:
      raise ValueError(f"prompt of shape {tuple(prompt.shape)} does not fit width {h}")
    mask, is_prompt, has_bos = self._prompt_layout(p, mask, input_ids)
    rows = jnp.broadcast_to(prompt.astype(embeds.dtype), (b, p, h))
    front = jnp.concatenate([rows, embeds], axis=1)
    after_bos = jnp.concatenate([embeds[:, :1], rows, embeds[:, 1:]], axis=1)
    return jnp.where(has_bos[:, None, None], after_bos, front), mask, is_prompt

  # -- the shared prefix -----------------------------------------------------------------------

  def shared_prefix_length(
    self, input_ids: np.ndarray, input_mask: np.ndarray, prompt_length: int = 0
  ) -> int:
    """Host side: how many leading tokens of a batch `context` may run once (0: none).

    The longest prefix that every real row (mask not all 0) has, all of it real, with at least
    one real token of the row after it (so that each row's last logits are its own), rounded
    down to `shared_prefix_buckets` (a static shape each: few compilations). With a soft prompt
    at least as long as the smallest bucket, the first token alone (BOS) is worth sharing too:
    the shared positions are then BOS and the prompt.

    Args:
      input_ids, input_mask: `[B, T]` right-padded inputs (numpy).
      prompt_length: P, the soft prompt's length (0: none).
    """
    buckets = tuple(self.shared_prefix_buckets)
    if not buckets:
      return 0
    if prompt_length >= buckets[0]:
      buckets = (1, *buckets)
    ids, mask = np.asarray(input_ids), np.asarray(input_mask) > 0
    real = mask.any(axis=1)
    if not real.any():
      return 0
    ids, mask = ids[real], mask[real]
    same = mask.all(axis=0) & (ids == ids[:1]).all(axis=0)
    common = int(np.argmin(same)) if not same.all() else same.size
    longest = min(common, int(mask.sum(axis=1).min()) - 1)
    n = max((s for s in buckets if s <= longest), default=0)
    if n and n + prompt_length < self.min_shared_fraction * (ids.shape[1] + prompt_length):
      return 0
    return n

  def with_shared_prefix(self, batch: prompted.Batch, prompt_length: int = 0) -> prompted.Batch:
    """`batch` plus `prefix_ids [B, T_s]` when its rows share `T_s > 0` leading tokens.

    Every row of `prefix_ids` is the shared prefix (rows, so that it is placed along the batch
    axis like every other key); `context` reads its first row and its static length.
    """
    ids = np.asarray(batch["input_ids"])
    n = self.shared_prefix_length(ids, batch["input_mask"], prompt_length)
    if not n:
      return batch
    first = int(np.argmax(np.asarray(batch["input_mask"]).any(axis=1)))
    return {**batch, "prefix_ids": np.repeat(ids[first : first + 1, :n], ids.shape[0], axis=0)}

  def context(self, params, prompt, batch) -> DecoderContext:
    """The context pass over `input_ids` (right-padded), the soft prompt after BOS.

    With `prefix_ids [B, T_s]` in the batch (`with_shared_prefix`), the shared positions (BOS,
    the prompt, the other shared tokens) run once, at batch 1, and each row's own tokens attend
    to their keys and values: the same context, computed with `T_s + P` positions fewer per row.
    """
    input_ids = batch["input_ids"]
    mask = jnp.asarray(batch["input_mask"]).astype(jnp.int32)
    b, t = mask.shape
    shared_ids = batch.get("prefix_ids")
    n = 0 if shared_ids is None else shared_ids.shape[1]
    if n >= t:
      raise ValueError(f"prefix_ids of length {n} leave no own token in inputs of length {t}")
    p = 0 if prompt is None else prompt.shape[0]
    if n == 0:
      embeds = self._apply(params, input_ids, method=Decoder.embed)
      if prompt is None:
        is_prompt = jnp.zeros(mask.shape, bool)
      else:
        embeds, mask, is_prompt = self._insert_prompt(prompt, embeds, mask, input_ids)
    elif prompt is None:
      is_prompt = jnp.zeros(mask.shape, bool)
    else:
      mask, is_prompt, _ = self._prompt_layout(p, mask, input_ids)
    c = mask.shape[1]
    check_window(self.config, c)
    positions, bias = positions_from_mask(mask), causal_mask_bias(mask)
    if n == 0:
      hidden, kv = self._apply(params, embeds, positions, bias, method=Decoder.run)
    else:
      hidden, kv = self._shared_prefix_pass(
        params, prompt, shared_ids[:1], input_ids[:, n:], positions[:, n + p :], bias[:, :, n + p :]
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

  def _shared_prefix_pass(self, params, prompt, shared_ids, own_ids, own_positions, own_bias):
    """The context pass with its first `T_s + P` positions (the same in every row) run once.

    Args:
      shared_ids: `[1, T_s]` the shared tokens (the prompt goes after their BOS).
      own_ids: `[B, T - T_s]` each row's tokens after them.
      own_positions: `[B, T - T_s]` their position ids.
      own_bias: `[B, 1, T - T_s, C]` the full context's causal mask bias at their rows (the keys
        are the shared positions, then the row's own, in context order).

    Returns:
      `(hidden [B, C, H], kv)` as the plain pass: the shared part broadcast over the rows.
    """
    embeds = self._apply(params, shared_ids, method=Decoder.embed)
    ones = jnp.ones(shared_ids.shape, jnp.int32)
    if prompt is not None:
      embeds, _, _ = self._insert_prompt(prompt, embeds, ones, shared_ids)
    width = embeds.shape[1]
    shared_hidden, shared_kv = self._apply(
      params,
      embeds,
      jnp.arange(width, dtype=jnp.int32)[None],
      causal_mask_bias(jnp.ones((1, width), jnp.int32)),
      method=Decoder.run,
    )
    b = own_ids.shape[0]
    rows = lambda a: jnp.broadcast_to(a, (b, *a.shape[1:]))
    shared_kv = jax.tree.map(rows, shared_kv)
    own_hidden, own_kv = self._apply(
      params,
      self._apply(params, own_ids, method=Decoder.embed),
      own_positions,
      own_bias,
      prefix=shared_kv,
      method=Decoder.run,
    )
    # Whole-context arrays, so that every reader of DecoderContext stays as it is (memory only:
    # the broadcast copies cost no FLOPs).
    kv = jax.tree.map(
      lambda a, o: jnp.concatenate([a, o.astype(a.dtype)], axis=1), shared_kv, own_kv
    )
    return jnp.concatenate([rows(shared_hidden), own_hidden], axis=1), kv

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
    return prompted.masked_mean(ctx.hidden, chosen)

  def _option_token_log_probs(self, params, ctx, option_ids, option_mask) -> Array:
    """All options of an input in one continuation row (shared start: the context's end)."""
    del option_mask  # padded tokens are scored too; the reduction to scores drops them
    _, o, s = option_ids.shape
    layout = option_layout.shared_start_layout(o, s)
    logits = ctx.last_logits[:, None]  # the layout's shared start: the context's end
    if s > 1:
      chains = option_layout.decoder_inputs(layout, option_ids, 0)[:, 1:]  # [B, O * (S - 1)]
      depth = layout.decoder.relative_position[0, 1:]  # 1 .. S-1 along each chain
      rest = self._continue(params, ctx, chains, depth - 1, layout.decoder.visible[1:, 1:], None)
      logits = jnp.concatenate([logits, rest], axis=1)
    return option_layout.option_token_log_probs(layout, logits, option_ids)

  def target_scores(self, params, prompt, batch, *, context=None):
    """Sum log-prob and token count of each `[R, S]` target continuing input `target_index`."""
    ctx = context if context is not None else self.context(params, prompt, batch)
    target_ids, target_mask = batch["target_ids"], jnp.asarray(batch["target_mask"])
    logits = self._target_logits(params, ctx, target_ids, batch.get("target_index"))
    lp = scoring.token_log_probs(logits, target_ids)
    weights = target_mask.astype(jnp.float32)
    return jnp.sum(lp * weights, axis=-1), jnp.sum(target_mask.astype(jnp.int32), axis=-1)

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
