"""Vocabularies: our T5 tokenization must equal Hugging Face `T5TokenizerFast` (ids and EOS)."""

import random
import shutil

import numpy as np
import pytest
import seqio
import tensorflow as tf

from robust_prompt import vocab as vocab_lib

BASE_STRINGS = [
  "Hello world",
  "The quick brown fox jumps over the lazy dog.",
  "Question: What is 2 + 2?\nAnswer:",
  "Which of the following is correct? (A) yes (B) no",
  "  leading spaces",
  "trailing spaces   ",
  "a  b   c    d",
  "tabs\tinside\t\ttext",
  "new\nlines\n\n\nhere",
  "\r\nwindows line ends\r\n",
  "mixed \t \n whitespace",
  "",
  " ",
  "\t",
  "\n",
  "café naïve résumé façade",
  "Ångström Øresund Ærø",
  "São Paulo, Köln, Zürich, Kraków, Łódź",
  "ﬁ ligature, ① circled, ½ fraction, ² superscript",
  "ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ １２３",
  "日本語のテキスト",
  "中文文本测试，标点符号。",
  "한국어 텍스트",
  "Русский текст с пунктуацией!",
  "Ελληνικά γράμματα",
  "עברית ועוד",
  "العربية نص",
  "हिन्दी पाठ",
  "ไทย ภาษา",
  "emoji 😀👍🏽 family 👨‍👩‍👧 flags 🇫🇷",
  "math ∑ ∫ √ ≤ ≥ ≠ ∞ π",
  "quotes “smart” ‘single’ «guillemets» „low“",
  "dashes - – — and ellipsis …",
  "12,345.67 and 0.001 and -42 and 1e-5",
  "2024-01-31T12:34:56Z",
  "phone +1 (555) 123-4567",
  "$100, €20, £5, ¥1000",
  "email someone@example.com url https://example.org/path?q=1&r=2#frag",
  "C++ code: int main() { return 0; }",
  "def f(x):\n    return x ** 2\n",
  "<html><body>tag soup</body></html>",
  "punctuation!!! ??? ... ,,, ;;; :::",
  "ALL CAPS SENTENCE",
  "MiXeD CaSe WoRdS",
  "hyphen-ated words and under_scores",
  "back\\slash and /forward/slash",
  "#hashtag @mention",
  "soft\u00adhyphen and zero\u200bwidth space",
  "non\u00a0breaking space",
  "combining e\u0301 accent vs é",
  "a",
  "A.",
  "?",
  "...",
  "x" * 50,
  "supercalifragilisticexpialidocious antidisestablishmentarianism",
  "1234567890" * 5,
  "Premise: A man plays guitar. Hypothesis: A person makes music. Entailment?",
]

# Whole sentences repeated: a long input, as in few-shot prompts.
LONG_TEXT = " ".join(BASE_STRINGS[1:12]) * 20

CHAR_POOLS = [
  "abcdefghijklmnopqrstuvwxyz",
  "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
  "0123456789",
  " \t\n  ",
  ".,;:!?-()[]{}'\"/\\@#$%^&*+=<>|~`",
  "éèêëàâäôöûüçñßøåæœ",
  "日本語中文한국어",
  "😀👍🎉🔥",
  "αβγδεζηθ",
  "абвгдежз",
]


def _random_strings(n: int, seed: int = 0) -> list[str]:
  rng = random.Random(seed)
  out = []
  for _ in range(n):
    words = []
    for _ in range(rng.randint(1, 12)):
      pool = rng.choice(CHAR_POOLS)
      words.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 8))))
    sep = rng.choice([" ", " ", " ", "  ", "\t", "\n", ""])
    out.append(sep.join(words))
  return out


ALL_STRINGS = BASE_STRINGS + [LONG_TEXT] + _random_strings(160)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory, spiece_path):
  """A directory with spiece.model and the tokenizer.json that transformers builds from it."""
  import transformers

  out = tmp_path_factory.mktemp("t5_tok")
  shutil.copy(spiece_path, out / "spiece.model")
  tok = transformers.T5TokenizerFast.from_pretrained(out)
  tok.save_pretrained(out)
  return out


@pytest.fixture(scope="module")
def hf_tokenizer(tokenizer_dir):
  import transformers

  return transformers.T5TokenizerFast.from_pretrained(tokenizer_dir)


def test_string_set_is_large_and_varied():
  assert len(ALL_STRINGS) >= 200
  assert len(set(ALL_STRINGS)) == len(ALL_STRINGS)


def test_sentencepiece_matches_t5_tokenizer_fast(spiece_path, hf_tokenizer):
  vocab = vocab_lib.load_vocabulary(spiece_path)
  assert isinstance(vocab, seqio.SentencePieceVocabulary)
  assert vocab.vocab_size == len(hf_tokenizer) == 32100
  ours = vocab_lib.encode_inputs(vocab, ALL_STRINGS)
  theirs = hf_tokenizer(ALL_STRINGS).input_ids
  mismatches = [(s, a, b) for s, a, b in zip(ALL_STRINGS, ours, theirs) if a != b]
  assert not mismatches, f"{len(mismatches)} mismatches, first: {mismatches[0]!r}"
  assert all(ids[-1] == 1 for ids in ours)
  assert len(ours[ALL_STRINGS.index(LONG_TEXT)]) > 500


def test_tokenizer_json_matches_t5_tokenizer_fast(tokenizer_dir, hf_tokenizer):
  vocab = vocab_lib.load_vocabulary(tokenizer_dir / "tokenizer.json")
  assert isinstance(vocab, vocab_lib.HFTokenizerVocabulary)
  assert (vocab.eos_id, vocab.unk_id, vocab.pad_id) == (1, 2, 0)
  assert vocab.vocab_size == 32100
  assert vocab_lib.encode_targets(vocab, ALL_STRINGS) == hf_tokenizer(ALL_STRINGS).input_ids


@pytest.mark.parametrize("max_len", [1, 2, 5, 17])
def test_truncation_keeps_eos_last_like_hf(spiece_path, hf_tokenizer, max_len):
  vocab = vocab_lib.load_vocabulary(spiece_path)
  texts = [LONG_TEXT, "short", "", BASE_STRINGS[2]]
  ours = vocab_lib.encode_inputs(vocab, texts, max_len=max_len)
  theirs = hf_tokenizer(texts, max_length=max_len, truncation=True).input_ids
  assert ours == theirs
  assert all(len(ids) <= max_len and ids[-1] == 1 for ids in ours)


def test_known_differences_special_token_strings(spiece_path, hf_tokenizer):
  """Documents the genuine differences: HF parses special-token strings inside text."""
  vocab = vocab_lib.load_vocabulary(spiece_path)
  # Same on both sides: a sentinel at a word start (seqio registers "▁<extra_id_N>").
  assert vocab_lib.encode_inputs(vocab, ["<extra_id_0> x"]) == [[32099, 3, 226, 1]]
  assert hf_tokenizer(["<extra_id_0> x"]).input_ids == [[32099, 3, 226, 1]]
  # Different: special tokens glued to words or written as text.
  for text, hf_ids in [
    ("a<extra_id_0>b", [3, 9, 32099, 3, 115, 1]),
    # Even at a word start: HF starts a new word ("▁" = 3) after the sentinel, SentencePiece not.
    ("x <extra_id_0>y", [3, 226, 32099, 3, 63, 1]),
    ("<unk>", [2, 1]),
    ("</s> inside", [1, 1096, 1]),
    ("<pad>", [0, 1]),
  ]:
    assert hf_tokenizer([text]).input_ids == [hf_ids]
    ours = vocab_lib.encode_inputs(vocab, [text])[0]
    assert ours != hf_ids and 0 not in ours and ours.count(1) == 1


def test_decode_round_trip(spiece_path, tokenizer_dir):
  for vocab in [
    vocab_lib.load_vocabulary(spiece_path),
    vocab_lib.load_vocabulary(tokenizer_dir / "tokenizer.json"),
    vocab_lib.load_vocabulary("byte"),
  ]:
    ids = vocab_lib.encode_inputs(vocab, ["Hello world, café!"])[0]
    assert vocab.decode(ids) == "Hello world, café!"


def test_hf_vocabulary_in_a_seqio_pipeline(tokenizer_dir, spiece_path):
  hf_vocab = vocab_lib.HFTokenizerVocabulary(tokenizer_dir / "tokenizer.json")
  sp_vocab = vocab_lib.load_vocabulary(spiece_path)
  texts = ["Hello world", "café 日本", "a  b\tc"]
  ds = tf.data.Dataset.from_tensor_slices({"inputs": texts})
  features = {"inputs": seqio.Feature(hf_vocab, add_eos=True)}
  ds = seqio.preprocessors.tokenize(ds, features)
  ds = seqio.preprocessors.append_eos(ds, features)
  got = [ex["inputs"].tolist() for ex in ds.as_numpy_iterator()]
  assert got == vocab_lib.encode_inputs(sp_vocab, texts)
  # Batched tf encode (ragged) and decode.
  ragged = hf_vocab.encode_tf(tf.constant(texts))
  assert ragged.to_list() == [sp_vocab.encode(t) for t in texts]
  ids = tf.constant([[8774, 296, 1, 0], [8774, 1, 0, 0]])
  assert hf_vocab.decode_tf(ids).numpy().tolist() == [b"Hello world", b"Hello"]
  assert hf_vocab.decode_tf(ids[0]).numpy() == b"Hello world"


def test_load_vocabulary_directory_preference_and_errors(tmp_path, tokenizer_dir):
  assert isinstance(vocab_lib.load_vocabulary(tokenizer_dir), seqio.SentencePieceVocabulary)
  only_json = tmp_path / "only_json"
  only_json.mkdir()
  shutil.copy(tokenizer_dir / "tokenizer.json", only_json / "tokenizer.json")
  assert isinstance(vocab_lib.load_vocabulary(only_json), vocab_lib.HFTokenizerVocabulary)
  byte = vocab_lib.load_vocabulary("byte")
  assert isinstance(byte, seqio.ByteVocabulary)
  assert vocab_lib.encode_inputs(byte, ["hi"]) == [[ord("h") + 3, ord("i") + 3, 1]]
  with pytest.raises(FileNotFoundError, match="does not exist"):
    vocab_lib.load_vocabulary(tmp_path / "missing.model")
  empty = tmp_path / "empty"
  empty.mkdir()
  (empty / "notes.txt").write_text("x")
  with pytest.raises(FileNotFoundError, match=r"spiece.model or tokenizer.json.*notes.txt"):
    vocab_lib.load_vocabulary(empty)
  with pytest.raises(ValueError, match="max_len"):
    vocab_lib.encode_inputs(byte, ["x"], max_len=0)


def test_vocabulary_spec_round_trip(spiece_path, tokenizer_dir):
  for vocab in [
    vocab_lib.load_vocabulary(spiece_path),
    vocab_lib.load_vocabulary(tokenizer_dir / "tokenizer.json"),
    vocab_lib.load_vocabulary("byte"),
  ]:
    again = vocab_lib.vocabulary_from_spec(vocab_lib.vocabulary_spec(vocab))
    assert type(again) is type(vocab)
    assert again.encode("Hello café") == vocab.encode("Hello café")
    assert np.array_equal(again.vocab_size, vocab.vocab_size)
