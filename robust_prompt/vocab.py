"""Vocabularies: SentencePiece (seqio), Hugging Face `tokenizer.json`, and raw bytes.

Every vocabulary is a `seqio.Vocabulary`, so it can serve as a SeqIO output feature. Token
conventions follow Hugging Face T5 exactly (design.md): `encode(text) + [EOS]`, pad id 0, and
truncation keeps EOS as the last token.

Known, deliberate differences between `seqio.SentencePieceVocabulary` and `T5TokenizerFast`: the
fast tokenizer parses special-token strings written inside the text (`"</s>"`, `"<pad>"`,
`"<unk>"`, and `"<extra_id_N>"` not preceded by a space) into their special ids, whereas
SentencePiece treats them as ordinary characters (seqio registers sentinels as `"▁<extra_id_N>"`,
which only match at a word start); and after a sentinel HF starts a new word (`"x <extra_id_0>y"`
gets a `"▁"` before `y`), SentencePiece does not. Ordinary text, including whitespace runs, tabs,
newlines, accents, CJK and emoji, tokenizes identically (tests/test_vocab.py checks 200+ strings).
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import seqio
import tensorflow as tf

# T5's SentencePiece model has 32,000 pieces; T5 models reserve 100 sentinel ids on top of them.
T5_EXTRA_IDS = 100
SPIECE_NAME = "spiece.model"
TOKENIZER_JSON_NAME = "tokenizer.json"
BYTE_SPEC = "byte"
# Decoder-only models: LLaMA 1/2's SentencePiece file and the HF tokenizer settings beside it.
SENTENCEPIECE_TOKENIZER_NAME = "tokenizer.model"
TOKENIZER_CONFIG_NAME = "tokenizer_config.json"


def _read_tokenizer_json(path: str):
  """`tokenizers.Tokenizer.from_file(path)`, with a clear error for a malformed file."""
  import tokenizers

  try:
    return tokenizers.Tokenizer.from_file(path)
  except Exception as e:  # tokenizers raises a bare Exception on malformed files.
    raise ValueError(f"{path}: not a readable Hugging Face tokenizer.json ({e})") from e


class _PythonTokenizerVocabulary(seqio.Vocabulary):
  """What the vocabularies backed by a Python tokenizer share (one tokenizer file each).

  Subclasses set `_path`, `_eos_id` and `_unk_id` and implement `_encode` / `_decode`; the
  TensorFlow methods wrap those in `tf.py_function`, so SeqIO pipelines work (on the host, not
  inside a graph compiled for an accelerator). Two vocabularies of one class are equal when they
  read the same file.
  """

  _path: str
  _eos_id: int | None
  _unk_id: int | None

  @property
  def eos_id(self) -> int | None:
    return self._eos_id

  @property
  def unk_id(self) -> int | None:
    return self._unk_id

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    """Encodes a scalar string to `[n] int32`, or a `[B]` string tensor to a ragged `[B, None]`."""

    def encode_flat(x):
      rows = [self._encode(t.decode("utf-8")) for t in np.reshape(x.numpy(), [-1])]
      flat = np.asarray([i for r in rows for i in r], np.int32)
      return flat, np.asarray([len(r) for r in rows], np.int64)

    values, lengths = tf.py_function(encode_flat, [s], Tout=[tf.int32, tf.int64])
    values.set_shape([None])
    if s.shape.rank == 0:
      return values
    return tf.RaggedTensor.from_row_lengths(values, tf.reshape(lengths, [-1]))

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    """Decodes `[n]` ids to a scalar string, or `[B, n]` ids to `[B]` strings."""

    def decode(x):
      arr = x.numpy()
      if arr.ndim == 1:
        return tf.constant(self._decode(arr.tolist()).encode("utf-8"))
      return tf.constant([self._decode(row.tolist()).encode("utf-8") for row in arr])

    out = tf.py_function(decode, [ids], Tout=tf.string)
    out.set_shape(ids.shape[:-1])
    return out

  def __eq__(self, other) -> bool:
    return isinstance(other, type(self)) and other._path == self._path

  def __hash__(self) -> int:
    return hash(self._path)


class HFTokenizerVocabulary(_PythonTokenizerVocabulary):
  """A Hugging Face `tokenizers` tokenizer (a `tokenizer.json`) as a `seqio.Vocabulary`.

  Special tokens (EOS, UNK) are read from the tokenizer itself; PAD must be id 0 (the seqio and
  T5 convention). Sentinels such as `<extra_id_0>` are already part of a T5 `tokenizer.json`, so
  `extra_ids` is 0.
  """

  def __init__(
    self,
    tokenizer_json: str | os.PathLike,
    eos_token: str = "</s>",
    unk_token: str = "<unk>",
    pad_token: str = "<pad>",
  ):
    self._path = str(tokenizer_json)
    self._tokenizer = _read_tokenizer_json(self._path)
    self._eos_id = self._tokenizer.token_to_id(eos_token)
    self._unk_id = self._tokenizer.token_to_id(unk_token)
    pad_id = self._tokenizer.token_to_id(pad_token)
    if pad_id not in (None, seqio.vocabularies.PAD_ID):
      raise ValueError(
        f"{self._path}: pad token {pad_token!r} has id {pad_id}, but T5/seqio need pad id 0"
      )
    super().__init__(extra_ids=0)

  @property
  def tokenizer_json(self) -> str:
    return self._path

  @property
  def tokenizer(self):
    """The underlying `tokenizers.Tokenizer`."""
    return self._tokenizer

  @property
  def _base_vocab_size(self) -> int:
    return self._tokenizer.get_vocab_size(with_added_tokens=True)

  def _encode(self, s: str) -> Sequence[int]:
    # No post-processor: the caller appends EOS (seqio convention; see `encode_inputs`).
    return self._tokenizer.encode(s, add_special_tokens=False).ids

  def _decode(self, ids) -> str:
    return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)

  def __str__(self) -> str:
    return f"HFTokenizerVocabulary(file={self._path}, size={self.vocab_size})"


def read_tokenizer_config(directory: str | os.PathLike) -> dict[str, Any]:
  """The HF tokenizer settings of a model directory (`{}` when it has none).

  `tokenizer_config.json`, with the chat template from `chat_template.jinja` (transformers >= 5
  writes it there) or `chat_template.json` when the config has none, and the special tokens of an
  older `special_tokens_map.json` where the config does not name them.
  """
  directory = pathlib.Path(directory)
  config: dict[str, Any] = {}
  path = directory / TOKENIZER_CONFIG_NAME
  if path.is_file():
    try:
      config = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
      raise ValueError(f"{path}: not valid JSON ({e})") from e
  if not config.get("chat_template"):
    if (directory / "chat_template.jinja").is_file():
      config["chat_template"] = (directory / "chat_template.jinja").read_text(encoding="utf-8")
    elif (directory / "chat_template.json").is_file():
      template = json.loads((directory / "chat_template.json").read_text(encoding="utf-8"))
      config["chat_template"] = template.get("chat_template")
  special_map = directory / "special_tokens_map.json"
  if special_map.is_file():
    for key, value in json.loads(special_map.read_text(encoding="utf-8")).items():
      config.setdefault(key, value)
  return config


def _token_text(value: Any) -> str | None:
  """A special token as tokenizer_config.json writes it: a string or `{"content": ...}`."""
  if isinstance(value, Mapping):
    value = value.get("content")
  return value if isinstance(value, str) and value else None


class DecoderVocabulary(_PythonTokenizerVocabulary):
  """A decoder-only model's tokenizer: a `tokenizer.json` or a SentencePiece `tokenizer.model`.

  `encode` gives the plain token ids of a text (seqio convention: no special tokens added); the
  model's own convention is `prefix_ids + encode(text) + suffix_ids`, exactly what
  `AutoTokenizer(text)["input_ids"]` gives (`encode_for_model`). Special-token strings written in
  the text ("<s>", "<|begin_of_text|>", ...) become their ids, as in Hugging Face.

  * `tokenizer.json`: the `tokenizers` pipeline itself; its post-processor decides the prefix and
    suffix (transformers >= 5 does not rebuild it from `add_bos_token`).
  * `tokenizer.model`: SentencePiece as transformers >= 5 converts it for LLaMA: no normalisation,
    a "▁" prepended to the first piece of text (to every piece between special tokens when
    `legacy: true`; never when `add_prefix_space: false`) unless it already starts with a space
    (raw SentencePiece would add a second one); BOS/EOS from `add_bos_token` and `add_eos_token`
    (transformers >= 5 adds neither when tokenizer_config.json does not say; a warning is logged).

  Args:
    path: the tokenizer file.
    tokenizer_config: the contents of `tokenizer_config.json` (special tokens, chat template).
  """

  def __init__(self, path: str | os.PathLike, tokenizer_config: Mapping[str, Any] | None = None):
    self._path = str(path)
    self._config = dict(tokenizer_config or {})
    self._is_json = self._path.endswith(".json") or _looks_like_json(pathlib.Path(self._path))
    cfg = self._config
    if self._is_json:
      self._tokenizer = _read_tokenizer_json(self._path)
      self._specials = {
        t.content: i for i, t in self._tokenizer.get_added_tokens_decoder().items() if t.special
      }
    else:
      self._load_sentencepiece(cfg)
    names = {}
    for key, default in (("bos", "<s>"), ("eos", "</s>"), ("unk", "<unk>"), ("pad", None)):
      text = _token_text(cfg.get(f"{key}_token"))
      if text is None and not self._is_json:
        text = default  # LLaMA's SentencePiece conventions
      names[key] = text
    self._bos_id = self._token_id(names["bos"])
    self._eos_id = self._token_id(names["eos"])
    self._unk_id = self._token_id(names["unk"])
    self._pad_id = self._token_id(names["pad"])
    self._prefix_ids, self._suffix_ids = self._model_specials(cfg)
    super().__init__(extra_ids=0)

  # -- construction -------------------------------------------------------------------------------

  def _load_sentencepiece(self, cfg: Mapping[str, Any]) -> None:
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    try:
      with open(self._path, "rb") as f:
        proto = sentencepiece_model_pb2.ModelProto.FromString(f.read())
    except Exception as e:  # protobuf's DecodeError and friends
      raise ValueError(f"{self._path}: not a SentencePiece model ({e})") from e
    self._decoder_sp = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
    # HF runs the SentencePiece pieces without SentencePiece's normaliser: no dummy prefix of its
    # own (we prepend "▁" ourselves, by HF's rule) and no whitespace or NFKC rewriting.
    proto.normalizer_spec.add_dummy_prefix = False
    proto.normalizer_spec.remove_extra_whitespaces = False
    proto.normalizer_spec.name = "identity"
    proto.normalizer_spec.precompiled_charsmap = b""
    self._sp = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
    if cfg.get("add_prefix_space") is False:
      self._prepend = "never"
    else:
      self._prepend = "always" if cfg.get("legacy") else "first"
    # Special tokens: SentencePiece's control pieces, and tokens the config adds (e.g. [PAD]).
    self._specials = {}
    for i in range(self._sp.get_piece_size()):
      if self._sp.is_control(i) or self._sp.is_unknown(i):
        self._specials[self._sp.id_to_piece(i)] = i
    for key, value in (cfg.get("added_tokens_decoder") or {}).items():
      text = _token_text(value)
      if text is not None:
        self._specials[text] = int(key)

  def _token_id(self, text: str | None) -> int | None:
    if text is None:
      return None
    if text in self._specials:
      return self._specials[text]
    if self._is_json:
      return self._tokenizer.token_to_id(text)
    i = self._sp.piece_to_id(text)
    return None if i == self._sp.unk_id() and text != self._sp.id_to_piece(i) else i

  def _model_specials(self, cfg: Mapping[str, Any]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(prefix ids, suffix ids) the tokenizer adds around every text (e.g. `([BOS], ())`)."""
    if not self._is_json:
      # transformers >= 5 builds the post-processor from these two flags, both false when absent.
      if "add_bos_token" not in cfg:
        logging.getLogger(__name__).warning(
          "%s: tokenizer_config.json does not set add_bos_token, so (as transformers >= 5) no "
          "BOS is added; LLaMA models were trained with one (set add_bos_token: true)",
          self._path,
        )
      add_bos = bool(cfg.get("add_bos_token", False)) and self._bos_id is not None
      add_eos = bool(cfg.get("add_eos_token", False)) and self._eos_id is not None
      return ((self._bos_id,) if add_bos else ()), ((self._eos_id,) if add_eos else ())
    # The post-processor adds fixed tokens around the text (TemplateProcessing, Roberta, ...):
    # find them around a probe's plain ids.
    probe = "a"
    plain = self._tokenizer.encode(probe, add_special_tokens=False).ids
    full = self._tokenizer.encode(probe, add_special_tokens=True).ids
    for start in range(len(full) - len(plain) + 1):
      if full[start : start + len(plain)] == plain:
        return tuple(full[:start]), tuple(full[start + len(plain) :])
    raise ValueError(f"{self._path}: the post-processor rewrites the text's ids; not supported")

  # -- properties ---------------------------------------------------------------------------------

  @property
  def path(self) -> str:
    return self._path

  @property
  def tokenizer_config(self) -> dict[str, Any]:
    return dict(self._config)

  @property
  def chat_template(self) -> str | None:
    return self._config.get("chat_template") or None

  @property
  def bos_id(self) -> int | None:
    return self._bos_id

  @property
  def tokenizer_pad_id(self) -> int | None:
    """The tokenizer's own pad token (seqio's `pad_id` is always 0)."""
    return self._pad_id

  @property
  def prefix_ids(self) -> tuple[int, ...]:
    """What the tokenizer puts before every text (BOS for Llama, nothing for Qwen2)."""
    return self._prefix_ids

  @property
  def suffix_ids(self) -> tuple[int, ...]:
    """What the tokenizer puts after every text (usually nothing; EOS with `add_eos_token`)."""
    return self._suffix_ids

  @property
  def _base_vocab_size(self) -> int:
    if self._is_json:
      return self._tokenizer.get_vocab_size(with_added_tokens=True)
    return max(self._sp.get_piece_size(), max(self._specials.values(), default=-1) + 1)

  # -- encoding -----------------------------------------------------------------------------------

  def encode_for_model(self, text: str) -> list[int]:
    """`AutoTokenizer(text)["input_ids"]`: the plain ids with the tokenizer's prefix and suffix."""
    return [*self._prefix_ids, *self._encode(text), *self._suffix_ids]

  def _encode(self, s: str) -> list[int]:
    if self._is_json:
      return self._tokenizer.encode(s, add_special_tokens=False).ids
    ids: list[int] = []
    pattern = "|".join(re.escape(t) for t in sorted(self._specials, key=len, reverse=True))
    parts = re.split(f"({pattern})", s) if pattern else [s]
    at = 0
    for part in parts:
      if part in self._specials:
        ids.append(self._specials[part])
      elif part:
        prepend = self._prepend == "always" or (self._prepend == "first" and at == 0)
        if prepend and not part.startswith(" "):
          part = " " + part
        ids.extend(self._sp.encode(part))
      at += len(part)
    return ids

  def _decode(self, ids) -> str:
    ids = [int(i) for i in ids]
    if self._is_json:
      return self._tokenizer.decode(ids, skip_special_tokens=True)
    special = set(self._specials.values())
    return self._decoder_sp.decode([i for i in ids if i not in special])

  def __str__(self) -> str:
    kind = "tokenizer.json" if self._is_json else "sentencepiece"
    return f"DecoderVocabulary({kind}={self._path}, size={self.vocab_size})"


def load_decoder_vocabulary(
  path_or_dir: str | os.PathLike, tokenizer_config: Mapping[str, Any] | None = None
) -> DecoderVocabulary:
  """A decoder-only model's tokenizer from its file or its model directory.

  Args:
    path_or_dir: `tokenizer.json`, a SentencePiece `tokenizer.model`, or a directory holding one
      (`tokenizer.json` preferred, as `AutoTokenizer` prefers the fast tokenizer).
    tokenizer_config: the HF tokenizer settings; default: read beside the file
      (`read_tokenizer_config`).
  """
  path = pathlib.Path(path_or_dir).expanduser()
  if path.is_dir():
    for name in (TOKENIZER_JSON_NAME, SENTENCEPIECE_TOKENIZER_NAME):
      if (path / name).is_file():
        path = path / name
        break
    else:
      raise FileNotFoundError(
        f"{path}: no tokenizer found (expected {TOKENIZER_JSON_NAME} or "
        f"{SENTENCEPIECE_TOKENIZER_NAME}); pass --vocab PATH"
      )
  if not path.is_file():
    raise FileNotFoundError(f"tokenizer {str(path_or_dir)!r} does not exist")
  if tokenizer_config is None:
    tokenizer_config = read_tokenizer_config(path.parent)
  return DecoderVocabulary(path, tokenizer_config)


def load_vocabulary(
  path_or_dir: str | os.PathLike, extra_ids: int = T5_EXTRA_IDS
) -> seqio.Vocabulary:
  """Loads a vocabulary from a file, a model directory, or the word "byte".

  Args:
    path_or_dir: a SentencePiece model (`*.model`), a `tokenizer.json`, a directory holding one of
      them (`spiece.model` is preferred, as T5X/seqio use it), or `"byte"` for `ByteVocabulary`.
      `gs://` paths to SentencePiece models are read through TensorFlow's gfile.
    extra_ids: sentinel ids added on top of a SentencePiece model (T5: 100).

  Returns:
    A `seqio.Vocabulary`.

  Raises:
    FileNotFoundError: the path does not exist or a directory holds no vocabulary.
    ValueError: a file of unknown kind.
  """
  spec = str(path_or_dir)
  if spec == BYTE_SPEC:
    return seqio.ByteVocabulary()
  if spec.startswith("gs://"):
    if tf.io.gfile.isdir(spec):
      spec = spec.rstrip("/") + "/" + SPIECE_NAME
    return seqio.SentencePieceVocabulary(spec, extra_ids=extra_ids)
  path = pathlib.Path(spec).expanduser()
  if not path.exists():
    raise FileNotFoundError(
      f"vocabulary {spec!r} does not exist; pass a spiece.model / tokenizer.json file, a model "
      f"directory containing one, or {BYTE_SPEC!r}"
    )
  if path.is_dir():
    if (path / SPIECE_NAME).is_file():
      path = path / SPIECE_NAME
    elif (path / TOKENIZER_JSON_NAME).is_file():
      path = path / TOKENIZER_JSON_NAME
    else:
      found = sorted(p.name for p in path.iterdir())[:20]
      raise FileNotFoundError(
        f"{path}: no vocabulary found (expected {SPIECE_NAME} or {TOKENIZER_JSON_NAME}; the "
        f"directory holds {found}); pass --vocab PATH"
      )
  if path.name.endswith(".json"):
    return HFTokenizerVocabulary(path)
  if _looks_like_json(path):
    return HFTokenizerVocabulary(path)
  return seqio.SentencePieceVocabulary(str(path), extra_ids=extra_ids)


def vocabulary_spec(vocab: seqio.Vocabulary) -> dict:
  """A JSON-serialisable description of `vocab`, for `vocabulary_from_spec` (checkpoints)."""
  if isinstance(vocab, seqio.SentencePieceVocabulary):
    return {
      "kind": "sentencepiece",
      "path": str(vocab.sentencepiece_model_file),
      "extra_ids": vocab.extra_ids,
    }
  if isinstance(vocab, HFTokenizerVocabulary):
    return {"kind": "tokenizer_json", "path": vocab.tokenizer_json}
  if isinstance(vocab, seqio.ByteVocabulary):
    return {"kind": "byte", "extra_ids": vocab.extra_ids}
  if isinstance(vocab, DecoderVocabulary):
    return {
      "kind": "decoder",
      "path": vocab.path,
      "file": pathlib.Path(vocab.path).name,
      "tokenizer_config": vocab.tokenizer_config,
    }
  raise ValueError(f"cannot describe vocabulary {vocab} for a checkpoint")


def vocabulary_from_spec(spec: dict, base_dir: str | os.PathLike | None = None) -> seqio.Vocabulary:
  """Inverse of `vocabulary_spec`; relative paths are resolved against `base_dir`."""
  kind = spec.get("kind")
  if kind == "byte":
    return seqio.ByteVocabulary(extra_ids=spec.get("extra_ids", 0))
  path = str(spec.get("path", ""))
  if base_dir is not None and path and not path.startswith("gs://"):
    path = str(pathlib.Path(base_dir) / path)  # an absolute `path` wins in `/`.
  if kind == "sentencepiece":
    return seqio.SentencePieceVocabulary(path, extra_ids=spec.get("extra_ids", T5_EXTRA_IDS))
  if kind == "tokenizer_json":
    return HFTokenizerVocabulary(path)
  if kind == "decoder":
    return DecoderVocabulary(path, spec.get("tokenizer_config") or {})
  raise ValueError(
    f"unknown vocabulary spec {spec!r} (kind must be sentencepiece/tokenizer_json/byte/decoder)"
  )


def _looks_like_json(path: pathlib.Path) -> bool:
  with open(path, "rb") as f:
    head = f.read(64).lstrip()
  if not head.startswith(b"{"):
    return False
  try:
    with open(path, encoding="utf-8") as f:
      json.load(f)
  except (ValueError, UnicodeDecodeError):
    return False
  return True


def _with_eos(ids: Sequence[int], eos_id: int, max_len: int | None) -> list[int]:
  ids = [int(i) for i in ids]
  if max_len is not None:
    if max_len < 1:
      raise ValueError(f"max_len must be >= 1 (room for EOS), got {max_len}")
    # Hugging Face truncates the text tokens so that EOS (added afterwards) is still last.
    ids = ids[: max_len - 1]
  return ids + [eos_id]


def encode_inputs(
  vocab: seqio.Vocabulary, texts: Iterable[str], max_len: int | None = None
) -> list[list[int]]:
  """Tokenizes inputs as Hugging Face T5 does: `encode(text) + [EOS]`, EOS kept on truncation.

  Args:
    vocab: the model's vocabulary (must define `eos_id`).
    texts: strings to encode.
    max_len: optional maximum length including EOS.

  Returns:
    One id list per text (unpadded), each ending in EOS.
  """
  eos = vocab.eos_id
  if eos is None:
    raise ValueError(f"{vocab} has no EOS id; T5 inputs need one")
  return [_with_eos(vocab.encode(t), eos, max_len) for t in texts]


def encode_targets(
  vocab: seqio.Vocabulary, texts: Iterable[str], max_len: int | None = None
) -> list[list[int]]:
  """Tokenizes targets exactly like inputs (HF `labels` end in EOS too); see `encode_inputs`."""
  return encode_inputs(vocab, texts, max_len)
