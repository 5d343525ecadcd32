"""Decoder-only tokenizers against `AutoTokenizer`, the continuation rule, and prompt formats.

The tokenizers are trained here: a byte-level BPE `tokenizer.json` (Llama 3 style with BOS and a
chat template; Qwen2 style without BOS) and a LLaMA-style SentencePiece `tokenizer.model`.
"""

import random

import pytest
import transformers
from test_decoder_common import WORDS, make_bpe_tokenizer, make_sentencepiece_tokenizer

from robust_prompt import vocab as vocab_lib
from robust_prompt.model import prompt_formats
from robust_prompt.model.decoder_config import DecoderConfig
from robust_prompt.model.prompted_decoder import PromptedDecoder

FIXED = [
  "",
  " ",
  "  ",
  "\n",
  "hello world",
  " hello world",
  "hello  world",
  "hello world ",
  "  leading and trailing  ",
  "tabs\tand\nnewlines\n\n",
  "Answer: yes",
  "Answer:",
  "café naïve 東京 😀",
  "Ωμέγα ß Straße مرحبا",
  "12345 67.89 -3",
  "(A) Paris\n(B) London",
  "x" * 40,
  "a.b,c;d!e?f",
]


def _strings(specials: list[str], n: int = 220, seed: int = 0) -> list[str]:
  """Fixed edge cases and random mixtures of words, whitespace, unicode and special tokens."""
  rng = random.Random(seed)
  extra = ["Ω", "ß", "é", "東", "😀", "\t", "\n", "  ", ".", ",", "?", "'", '"', "$", "10"]
  out = list(FIXED)
  out += [f"{a}{s}{b}" for s in specials for a, b in (("", "hi"), ("hi ", " there"), ("x", ""))]
  while len(out) < n:
    pieces = []
    for _ in range(rng.randint(1, 10)):
      r = rng.random()
      if r < 0.6:
        pieces.append(rng.choice(WORDS))
      elif r < 0.9:
        pieces.append(rng.choice(extra))
      else:
        pieces.append(rng.choice(specials) if specials else "!")
    sep = rng.choice([" ", "", "  ", "\n"])
    text = sep.join(pieces)
    if rng.random() < 0.2:
      text = " " + text
    if rng.random() < 0.2:
      text += rng.choice([" ", "\n", "  "])
    out.append(text)
  return out


@pytest.fixture(scope="module")
def llama3_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp("bpe_bos")
  make_bpe_tokenizer(out, bos=True)
  return out


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp("bpe_nobos")
  make_bpe_tokenizer(out, bos=False)
  return out


SP_CONFIGS = {
  "default": {},
  "legacy": {"legacy": True},
  "add_eos": {"add_eos_token": True, "legacy": False},
  "no_bos": {"add_bos_token": False},
}


@pytest.fixture(scope="module", params=sorted(SP_CONFIGS))
def sp_dir(request, tmp_path_factory):
  """(settings name, directory) of a SentencePiece tokenizer with those settings."""
  out = tmp_path_factory.mktemp(f"sp_{request.param}")
  make_sentencepiece_tokenizer(out, **SP_CONFIGS[request.param])
  return request.param, out


def _assert_same_as_auto(directory, specials):
  ours = vocab_lib.load_decoder_vocabulary(directory)
  theirs = transformers.AutoTokenizer.from_pretrained(directory)
  strings = _strings(specials)
  assert len(set(strings)) >= 200
  mismatches = [
    (s, ours.encode_for_model(s), theirs(s)["input_ids"])
    for s in strings
    if ours.encode_for_model(s) != theirs(s)["input_ids"]
  ]
  assert not mismatches, mismatches[:5]
  for s in strings[:60]:
    ids = theirs(s, add_special_tokens=False)["input_ids"]
    # seqio's `decode` stops at the first EOS.
    upto = ids[: ids.index(ours.eos_id)] if ours.eos_id in ids else ids
    assert ours.decode(ids) == theirs.decode(upto, skip_special_tokens=True), s
  return ours, theirs


def test_bpe_tokenizer_json_with_bos(llama3_dir):
  ours, theirs = _assert_same_as_auto(llama3_dir, ["<|begin_of_text|>", "<|eot_id|>"])
  assert ours.prefix_ids == (theirs.bos_token_id,) and ours.suffix_ids == ()
  assert ours.eos_id == theirs.convert_tokens_to_ids("<|eot_id|>")
  assert ours.chat_template


def test_bpe_tokenizer_json_without_bos(qwen_dir):
  ours, _ = _assert_same_as_auto(qwen_dir, ["<|endoftext|>", "<|im_start|>"])
  assert ours.prefix_ids == () and ours.bos_id is None


def test_sentencepiece_tokenizer_model(sp_dir):
  name, directory = sp_dir
  ours, _ = _assert_same_as_auto(directory, ["<s>", "</s>", "<unk>"])
  assert ours.prefix_ids == (() if name == "no_bos" else (1,))
  assert ours.suffix_ids == ((2,) if name == "add_eos" else ())


def _harness_pair(tok, context: str, continuation: str):
  """lm-evaluation-harness's `_encode_pair` with the tokenizer's special tokens."""
  n_spaces = len(context) - len(context.rstrip())
  if n_spaces:
    continuation = context[-n_spaces:] + continuation
    context = context[:-n_spaces]
  whole = tok(context + continuation)["input_ids"]
  context_enc = tok(context)["input_ids"]
  return context_enc, whole[len(context_enc) :]


@pytest.mark.parametrize("which", ["llama3", "sp"])
def test_options_are_harness_continuations(which, llama3_dir, tmp_path):
  directory = llama3_dir if which == "llama3" else make_sentencepiece_tokenizer(tmp_path).parent
  vocab = vocab_lib.load_decoder_vocabulary(directory)
  tok = transformers.AutoTokenizer.from_pretrained(directory)
  model = PromptedDecoder(
    DecoderConfig(
      vocab_size=512, d_model=8, num_layers=1, num_heads=1, num_kv_heads=1, head_dim=8, d_ff=8
    )
  )
  texts = ["Question: is the fox quick?\nAnswer:", "Answer: ", "the dog\n", "x"]
  options = [["yes", "no", "maybe so"], ["A", "B"], ["true", "false"], ["y"]]
  inputs = model.encode_inputs(vocab, texts, None)
  encoded = model.encode_options(vocab, texts, options, None)
  for text, opts, ctx_ids, opt_ids in zip(texts, options, inputs, encoded):
    for option, ids in zip(opts, opt_ids):
      want_ctx, want_cont = _harness_pair(tok, text, " " + option)
      assert ctx_ids == want_ctx and ids == want_cont, (text, option)
  # The delimiter and EOS are settings; truncation keeps BOS and the end of the context.
  eos_model = PromptedDecoder(model.config, target_delimiter="", append_eos=True)
  ids = eos_model.encode_options(vocab, ["Answer:"], [["yes"]], None)[0][0]
  assert ids == [*_harness_pair(tok, "Answer:", "yes")[1], vocab.eos_id]
  long = model.encode_inputs(vocab, ["the quick brown fox jumps over the lazy dog"], 4)[0]
  full = model.encode_inputs(vocab, ["the quick brown fox jumps over the lazy dog"], None)[0]
  assert long == [full[0], *full[-3:]] and full[0] == vocab.bos_id
  # Targets (cross-entropy): the delimiter then the target.
  assert model.encode_targets(vocab, ["yes"], None) == [vocab.encode(" yes")]


def test_standalone_options_drop_the_leading_bos(tmp_path):
  """The robustness study scored Alpaca on `tokenizer(option)` without its leading <s>."""
  directory = make_sentencepiece_tokenizer(tmp_path).parent
  vocab = vocab_lib.load_decoder_vocabulary(directory)
  tok = transformers.AutoTokenizer.from_pretrained(directory)
  model = PromptedDecoder(DecoderConfig(), option_encoding="standalone")
  ids = model.encode_options(vocab, ["### Response:"], [["yes", "no way"]], None)[0]
  assert ids == [tok("yes")["input_ids"][1:], tok("no way")["input_ids"][1:]]
  # With LLaMA's SentencePiece, " yes" after a context tokenizes the same way.
  assert (
    ids
    == PromptedDecoder(DecoderConfig()).encode_options(
      vocab, ["### Response:"], [["yes", "no way"]], None
    )[0]
  )


def test_chat_format_is_the_tokenizers_template(llama3_dir, qwen_dir):
  for directory in (llama3_dir, qwen_dir):
    vocab = vocab_lib.load_decoder_vocabulary(directory)
    tok = transformers.AutoTokenizer.from_pretrained(directory)
    text = prompt_formats.format_input(
      "chat", "Name the capital.", "France", vocab.tokenizer_config
    )
    messages = [{"role": "user", "content": "Name the capital.\n\nFrance"}]
    assert text == tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # The template writes BOS itself: one BOS in the model's input, as apply_chat_template.
    model = PromptedDecoder(DecoderConfig(), move_trailing_whitespace=False)
    assert (
      model.encode_inputs(vocab, [text], None)[0]
      == tok(text, add_special_tokens=False)["input_ids"]
    )


def test_chat_format_without_a_template_is_an_error(llama3_dir, tmp_path):
  make_bpe_tokenizer(tmp_path, chat_template=False)
  config = vocab_lib.load_decoder_vocabulary(tmp_path).tokenizer_config
  with pytest.raises(ValueError, match="no chat_template.*'raw' or 'alpaca'"):
    prompt_formats.format_input("chat", "Say hi.", "", config)
  with pytest.raises(ValueError, match="unknown prompt format"):
    prompt_formats.format_input("vicuna", "Say hi.", "", config)


def test_chat_template_from_chat_template_jinja(llama3_dir, tmp_path):
  """transformers >= 5 saves the template as chat_template.jinja beside tokenizer_config.json."""
  tok = transformers.AutoTokenizer.from_pretrained(llama3_dir)
  tok.save_pretrained(tmp_path)
  config = vocab_lib.read_tokenizer_config(tmp_path)
  assert config["chat_template"] == tok.chat_template


def test_raw_and_alpaca_formats():
  assert prompt_formats.format_input("raw", "Translate.", "chat") == "Translate.\n\nchat"
  assert prompt_formats.format_input("raw", "Translate: chat", "") == "Translate: chat"
  with_input = prompt_formats.format_input("alpaca", "Translate.", "chat")
  assert with_input == (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n### Instruction:\n"
    "Translate.\n\n### Input:\nchat\n\n### Response:"
  )
  assert prompt_formats.format_input("alpaca", "Say hi.", "") == (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\nSay hi.\n\n### Response:"
  )
