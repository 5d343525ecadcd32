"""The decoder-only model gin files parse, follow the house format, and have published sizes."""

import gin
import pytest
from helpers import GIN_DIR, assert_needs_size_file, model_config, model_gin_fixture, num_params

from robust_prompt.model.decoder import Decoder
from robust_prompt.model.decoder_config import DecoderConfig

MODELS = GIN_DIR / "models"
FAMILY_FILES = ("llama", "qwen2")  # sizes left %gin.REQUIRED

# Parameter counts of the published Hugging Face checkpoints (tied embeddings counted once).
# Alpaca adds Stanford's [PAD] row to LLaMA's embedding and output layer (32001 ids).
PUBLISHED = {
  "llama_7b": 6_738_415_616,
  "llama_13b": 13_015_864_320,
  "alpaca_7b": 6_738_415_616 + 2 * 4096,
  "alpaca_13b": 13_015_864_320 + 2 * 5120,
  "llama2_7b": 6_738_415_616,
  "llama2_13b": 13_015_864_320,
  "llama3_8b": 8_030_261_248,
  "llama3_1_8b": 8_030_261_248,
  "llama3_2_1b": 1_235_814_400,
  "llama3_2_3b": 3_212_749_824,
  "mistral_7b": 7_241_732_096,
  "qwen2_5_0_5b": 494_032_768,
  "qwen2_5_1_5b": 1_543_714_304,
  "qwen2_5_7b": 7_615_616_512,
}


gin_env = model_gin_fixture(DecoderConfig)


def _config(name: str) -> DecoderConfig:
  return model_config(MODELS / f"{name}.gin", DecoderConfig)


@pytest.mark.parametrize("name", [*FAMILY_FILES, *PUBLISHED])
def test_gin_file_parses(name):
  text = (MODELS / f"{name}.gin").read_text()
  assert text.startswith("# Contract:") and "# Provides:" in text and "# Requires:" in text
  if name in FAMILY_FILES:
    assert_needs_size_file(MODELS / f"{name}.gin")
    return
  config = _config(name)
  assert config.d_model == config.num_heads * config.head_dim  # true of every published size
  assert gin.query_parameter("%HF_MODEL_ID")
  expected_format = "alpaca" if name.startswith("alpaca") else "raw"
  assert gin.query_parameter("%PROMPT_FORMAT") == expected_format


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_parameter_counts(name):
  """Counted from `jax.eval_shape` of the module's init: no parameter is allocated."""
  count = num_params(Decoder(_config(name)))
  assert count == PUBLISHED[name], (name, count)


def test_architectures():
  llama31 = _config("llama3_1_8b")
  assert (llama31.rope_type, llama31.rope_factor, llama31.num_kv_heads) == ("llama3", 8.0, 8)
  gin.clear_config(clear_constants=True)
  mistral = _config("mistral_7b")
  assert (mistral.model_type, mistral.sliding_window) == ("mistral", 4096)
  gin.clear_config(clear_constants=True)
  qwen = _config("qwen2_5_0_5b")
  assert qwen.attention_bias and qwen.tie_word_embeddings and qwen.model_type == "qwen2"


@pytest.mark.parametrize("name, want", [("alpaca_7b", "alpaca"), ("llama3_8b", "raw")])
def test_model_file_prompt_format_is_the_default_for_eval_and_train(name, want):
  import argparse

  from robust_prompt.cli import eval as eval_cli
  from robust_prompt.cli import gin_utils

  gin_utils.register_configurables()
  eval_cli.configured_settings()
  gin_utils.parse_gin([f"models/{name}.gin"], [])
  args = argparse.Namespace(example_ids=None, shuffle_options=None)
  assert eval_cli._settings(args).prompt_format == want
  assert gin_utils.model_prompt_format("data.prompt_format") == want
  # An explicit binding wins over the model file's macro.
  gin_utils.parse_gin([f"models/{name}.gin"], ["evaluate.prompt_format = 'chat'"])
  assert eval_cli._settings(args).prompt_format == "chat"
  gin.clear_config()
