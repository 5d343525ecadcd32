"""Shared helpers of the decoder-only tests (no tests here): tiny random HF models and tokenizers.

Every model is a `transformers` `*ForCausalLM` with random weights, saved with `save_pretrained`;
the tokenizers are trained in the test (`tokenizers` BPE, `sentencepiece` BPE).
"""

from __future__ import annotations

import json
import pathlib
import random

import numpy as np

VOCAB_SIZE = 512  # >= the tokenizers' vocabularies below (400)

# Llama with grouped-query attention and Llama 3.1's rope scaling (a small original context so
# that the scaling changes many frequencies); Mistral (GQA, a sliding window); Qwen2 (q/k/v
# biases, tied embeddings, no BOS).
KINDS = ("llama", "mistral", "qwen2")


def hf_config(kind: str, **overrides):
  import transformers

  common = dict(
    vocab_size=VOCAB_SIZE,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    attn_implementation="eager",
  )
  if kind == "llama":
    common.update(
      bos_token_id=1,
      eos_token_id=2,
      rope_theta=500000.0,
      rope_scaling={
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16,
      },
    )
    cls = transformers.LlamaConfig
  elif kind == "mistral":
    common.update(bos_token_id=1, eos_token_id=2, sliding_window=64, rope_theta=10000.0)
    cls = transformers.MistralConfig
  elif kind == "qwen2":
    common.update(bos_token_id=None, eos_token_id=3, tie_word_embeddings=True, rope_theta=1000000.0)
    cls = transformers.Qwen2Config
  else:
    raise ValueError(kind)
  common.update(overrides)
  return cls(**common)


def make_hf_model(out_dir: pathlib.Path, kind: str, seed: int = 0, **overrides):
  """Saves a random tiny `*ForCausalLM` of `kind`; returns the (eval-mode) PyTorch model."""
  import torch
  import transformers

  torch.manual_seed(seed)
  config = hf_config(kind, **overrides)
  model = transformers.AutoModelForCausalLM.from_config(config).eval()
  with torch.no_grad():
    for p in model.parameters():
      # Wider than the default init, so that logits differ meaningfully between tokens.
      p.normal_(0.0, 0.25)
    if config.tie_word_embeddings:
      model.tie_weights()
  model.save_pretrained(out_dir)
  return model


WORDS = (
  "the quick brown fox jumps over lazy dog answer question true false yes no maybe option "
  "instruction input response hello world 123 4567 café naïve 東京 😀 Paris London A B C D"
).split()


def corpus(n: int = 2000, seed: int = 0) -> list[str]:
  rng = random.Random(seed)
  return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(n)]


LLAMA3_TEMPLATE = (
  "{{ bos_token }}{% for message in messages %}"
  "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] "
  "| trim + '<|eot_id|>' }}{% endfor %}"
  "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
  "{% endif %}"
)


def make_bpe_tokenizer(out_dir: pathlib.Path, *, bos: bool = True, chat_template: bool = True):
  """A byte-level BPE `tokenizer.json` (Llama 3 style: BOS by the post-processor), trained here.

  With `bos=False` it is Qwen2 style: no post-processor, `<|endoftext|>` as EOS.
  """
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

  specials = (
    [
      "<|begin_of_text|>",
      "<|end_of_text|>",
      "<|eot_id|>",
      "<|start_header_id|>",
      "<|end_header_id|>",
    ]
    if bos
    else ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
  )
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
    vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
  )
  tok.train_from_iterator(corpus(), trainer)
  if bos:
    tok.post_processor = processors.TemplateProcessing(
      single="<|begin_of_text|> $A",
      pair="<|begin_of_text|> $A <|begin_of_text|> $B",
      special_tokens=[("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))],
    )
  else:
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
  out_dir.mkdir(parents=True, exist_ok=True)
  tok.save(str(out_dir / "tokenizer.json"))
  config = {"tokenizer_class": "PreTrainedTokenizerFast"}
  if bos:
    config.update(bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
    if chat_template:
      config["chat_template"] = LLAMA3_TEMPLATE
  else:
    config.update(eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    if chat_template:
      config["chat_template"] = (
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
        "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
      )
  (out_dir / "tokenizer_config.json").write_text(json.dumps(config))
  return out_dir / "tokenizer.json"


def make_sentencepiece_tokenizer(out_dir: pathlib.Path, **tokenizer_config):
  """A LLaMA-style SentencePiece `tokenizer.model` (BPE, byte fallback, no normalisation)."""
  import sentencepiece as spm

  out_dir.mkdir(parents=True, exist_ok=True)
  text = out_dir / "corpus.txt"
  text.write_text("\n".join(corpus()), encoding="utf-8")
  spm.SentencePieceTrainer.train(
    input=str(text),
    model_prefix=str(out_dir / "sp"),
    vocab_size=400,
    model_type="bpe",
    byte_fallback=True,
    character_coverage=1.0,
    normalization_rule_name="identity",
    add_dummy_prefix=True,
    remove_extra_whitespaces=False,
    split_digits=True,
    allow_whitespace_only_pieces=True,
    unk_id=0,
    bos_id=1,
    eos_id=2,
    pad_id=-1,
    minloglevel=2,
  )
  (out_dir / "sp.model").rename(out_dir / "tokenizer.model")
  (out_dir / "sp.vocab").unlink()
  text.unlink()
  config = {
    "tokenizer_class": "LlamaTokenizer",
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "add_bos_token": True,  # as LLaMA's tokenizer_config.json
    **tokenizer_config,
  }
  (out_dir / "tokenizer_config.json").write_text(json.dumps(config))
  return out_dir / "tokenizer.model"


def hf_next_token_log_probs(model, ids: list[int]) -> np.ndarray:
  """`[len(ids), V]` log-softmax of the PyTorch model's logits for one unpadded sequence."""
  import torch

  with torch.no_grad():
    logits = model(torch.tensor([ids], dtype=torch.long)).logits[0]
  return torch.log_softmax(logits.double(), -1).numpy()


def hf_continuation_log_prob(model, context: list[int], continuation: list[int]) -> float:
  """log p(continuation | context) by the PyTorch model, the pair scored on its own."""
  lp = hf_next_token_log_probs(model, context + continuation)
  return float(sum(lp[len(context) - 1 + i, t] for i, t in enumerate(continuation)))
