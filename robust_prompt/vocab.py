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
import os
import pathlib
from collections.abc import Iterable, Sequence

import numpy as np
import seqio
import tensorflow as tf

# T5's SentencePiece model has 32,000 pieces; T5 models reserve 100 sentinel ids on top of them.
T5_EXTRA_IDS = 100
SPIECE_NAME = "spiece.model"
TOKENIZER_JSON_NAME = "tokenizer.json"
BYTE_SPEC = "byte"


class HFTokenizerVocabulary(seqio.Vocabulary):
  """A Hugging Face `tokenizers` tokenizer (a `tokenizer.json`) as a `seqio.Vocabulary`.

  Special tokens (EOS, UNK) are read from the tokenizer itself; PAD must be id 0 (the seqio and
  T5 convention). Sentinels such as `<extra_id_0>` are already part of a T5 `tokenizer.json`, so
  `extra_ids` is 0. The TensorFlow methods wrap the Python tokenizer in `tf.py_function`, so SeqIO
  pipelines work (on the host, not inside a graph compiled for an accelerator).
  """

  def __init__(
    self,
    tokenizer_json: str | os.PathLike,
    eos_token: str = "</s>",
    unk_token: str = "<unk>",
    pad_token: str = "<pad>",
  ):
    import tokenizers

    self._path = str(tokenizer_json)
    try:
      self._tokenizer = tokenizers.Tokenizer.from_file(self._path)
    except Exception as e:  # tokenizers raises a bare Exception on malformed files.
      raise ValueError(f"{self._path}: not a readable Hugging Face tokenizer.json ({e})") from e
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
  def eos_id(self) -> int | None:
    return self._eos_id

  @property
  def unk_id(self) -> int | None:
    return self._unk_id

  @property
  def _base_vocab_size(self) -> int:
    return self._tokenizer.get_vocab_size(with_added_tokens=True)

  def _encode(self, s: str) -> Sequence[int]:
    # No post-processor: the caller appends EOS (seqio convention; see `encode_inputs`).
    return self._tokenizer.encode(s, add_special_tokens=False).ids

  def _decode(self, ids) -> str:
    return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)

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
    return isinstance(other, HFTokenizerVocabulary) and other._path == self._path

  def __hash__(self) -> int:
    return hash(self._path)

  def __str__(self) -> str:
    return f"HFTokenizerVocabulary(file={self._path}, size={self.vocab_size})"


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
  raise ValueError(
    f"unknown vocabulary spec {spec!r} (kind must be sentencepiece/tokenizer_json/byte)"
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
