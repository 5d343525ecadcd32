"""Loading decoder-only checkpoints: HF weight layouts, `--model` family detection, the mesh,
our orbax format and `robust-prompt convert`."""

import json
import logging
import shutil

import jax
import numpy as np
import pytest
import torch
from test_decoder_common import make_bpe_tokenizer, make_hf_model, make_sentencepiece_tokenizer

from robust_prompt import partitioning
from robust_prompt import vocab as vocab_lib
from robust_prompt.checkpoints import hf_decoder, orbax_io, resolve
from robust_prompt.checkpoints.hf_names import CheckpointMismatchError
from robust_prompt.cli import main as cli
from robust_prompt.model import prompted
from robust_prompt.model.config import T5Config
from robust_prompt.model.decoder import Decoder
from robust_prompt.model.decoder_config import DecoderConfig
from robust_prompt.model.prompted_decoder import PromptedDecoder


def _leaves(tree) -> dict:
  return {
    jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(tree)
  }


def _assert_same(a, b):
  la, lb = _leaves(a), _leaves(b)
  assert la.keys() == lb.keys() and la
  for k in la:
    np.testing.assert_array_equal(la[k], lb[k], err_msg=k)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
  """A tiny Llama with a Llama-3-style tokenizer.json (BOS, chat template)."""
  out = tmp_path_factory.mktemp("llama_dir")
  make_hf_model(out, "llama")
  make_bpe_tokenizer(out)
  return out


def test_weight_layouts_load_the_same_tree(tmp_path):
  """model.safetensors, shards with an index, and pytorch_model.bin."""
  torch_model = make_hf_model(tmp_path / "single", "qwen2")
  torch_model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
  # transformers >= 5 writes safetensors only; older checkpoints are torch pickles of the state dict.
  (tmp_path / "bin").mkdir()
  torch.save(torch_model.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
  shutil.copy(tmp_path / "single" / "config.json", tmp_path / "bin" / "config.json")
  assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
  assert len(list((tmp_path / "sharded").glob("model-*.safetensors"))) > 1
  trees = [hf_decoder.load_hf_decoder(tmp_path / name)[1] for name in ("single", "sharded", "bin")]
  _assert_same(trees[0], trees[1])
  _assert_same(trees[0], trees[2])
  # Qwen2: q/k/v biases, tied embeddings (no logits_dense).
  assert "bias" in trees[0]["layers_0"]["attention"]["query"]
  assert "bias" not in trees[0]["layers_0"]["attention"]["out"]
  assert "logits_dense" not in trees[0]


def test_tree_matches_the_module_and_round_trips(tmp_path):
  make_hf_model(tmp_path, "llama")
  config, params, _ = hf_decoder.load_hf_decoder(tmp_path)
  shapes = partitioning.unbox(partitioning.abstract_variables(Decoder(config)))["params"]
  assert jax.tree.map(lambda x: tuple(x.shape), shapes) == jax.tree.map(np.shape, params)
  specs = partitioning.logical_param_specs(Decoder(config))
  assert tuple(specs["layers_1"]["attention"]["key"]["kernel"]) == ("embed", "joined_kv")
  assert tuple(specs["logits_dense"]["kernel"]) == ("embed", "vocab")
  sd = hf_decoder.tree_to_hf_state_dict(params, config)
  _assert_same(hf_decoder.hf_state_dict_to_tree(sd, config), params)


def test_checkpoint_mismatch_is_reported(tmp_path):
  make_hf_model(tmp_path, "llama")
  config, params, _ = hf_decoder.load_hf_decoder(tmp_path)
  sd = hf_decoder.tree_to_hf_state_dict(params, config)
  del sd["lm_head.weight"]
  sd["model.layers.0.self_attn.extra.weight"] = np.zeros(2)
  with pytest.raises(CheckpointMismatchError, match="lm_head.weight.*tied checkpoint"):
    hf_decoder.hf_state_dict_to_tree(sd, config)
  sd = hf_decoder.tree_to_hf_state_dict(params, config)
  with pytest.raises(CheckpointMismatchError, match="wrong shape: model.norm.weight"):
    hf_decoder.hf_state_dict_to_tree(sd, config.replace(d_model=16, head_dim=4))


def test_config_from_hf_dicts():
  """Older rope layouts, Llama 3.1 (llama3 rope, several EOS ids), Qwen2's unused window."""
  llama31 = {
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "rope_theta": 500000.0,
    "rope_scaling": {
      "factor": 8.0,
      "low_freq_factor": 1.0,
      "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8192,
      "rope_type": "llama3",
    },
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009],
    "max_position_embeddings": 131072,
  }
  c = DecoderConfig.from_hf_dict(llama31)
  assert (c.rope_type, c.rope_factor, c.rope_theta, c.head_dim) == ("llama3", 8.0, 500000.0, 128)
  assert c.eos_token_ids == (128001, 128008, 128009) and c.pad_token_id == 128001
  old = dict(llama31, rope_scaling={"type": "linear", "factor": 2.0})
  assert DecoderConfig.from_hf_dict(old).rope_type == "linear"
  qwen = {
    "model_type": "qwen2",
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "sliding_window": 32768,
    "use_sliding_window": False,
    "tie_word_embeddings": True,
    "bos_token_id": 151643,
    "eos_token_id": 151643,
  }
  q = DecoderConfig.from_hf_dict(qwen)
  assert q.sliding_window is None and q.attention_bias and not q.attention_out_bias
  assert DecoderConfig.from_json(q.to_json()) == q
  with pytest.raises(ValueError, match="hidden_act"):
    DecoderConfig.from_hf_dict(dict(qwen, hidden_act="gelu"))
  with pytest.raises(ValueError, match="rope_type"):
    DecoderConfig.from_hf_dict(dict(llama31, rope_scaling={"rope_type": "yarn", "factor": 4.0}))


def test_load_model_picks_the_family_and_logs_the_tokenizer(llama_dir, caplog):
  with caplog.at_level(logging.INFO, logger="robust_prompt.checkpoints.hf_decoder"):
    loaded = resolve.load_model(str(llama_dir))
  assert isinstance(loaded.config, DecoderConfig) and loaded.config.model_type == "llama"
  assert isinstance(loaded.vocab, vocab_lib.DecoderVocabulary)
  assert f"tokenizer {llama_dir / 'tokenizer.json'}" in caplog.text
  model = prompted.for_config(loaded.config)
  assert isinstance(model, PromptedDecoder)
  ids = model.encode_inputs(loaded.vocab, ["hello world"], 16)[0]
  assert ids[0] == loaded.vocab.bos_id == 0  # <|begin_of_text|> of the trained tokenizer
  # A config of the other family (e.g. from a T5 gin file) is refused.
  with pytest.raises(ValueError, match="DecoderConfig checkpoint, but a T5Config"):
    resolve.load_model(str(llama_dir), config=T5Config())


def test_load_model_onto_a_mesh(llama_dir):
  mesh = partitioning.make_mesh(2, 4)
  host = resolve.load_model(str(llama_dir))
  placed = resolve.load_model(str(llama_dir), mesh=mesh)
  _assert_same(placed.params, host.params)
  kernel = placed.params["layers_0"]["mlp"]["wi_0"]["kernel"]  # [H, F] (embed, mlp)
  assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, "model")
  assert len(kernel.addressable_shards[0].data.shape) == 2
  assert kernel.addressable_shards[0].data.shape[1] == kernel.shape[1] // 4


def test_orbax_round_trip_and_convert(tmp_path, capsys):
  hf_dir = tmp_path / "hf"
  make_hf_model(hf_dir, "llama", seed=2)
  make_sentencepiece_tokenizer(hf_dir, add_eos_token=False)
  original = resolve.load_model(str(hf_dir))
  assert original.vocab.path.endswith("tokenizer.model")
  out = tmp_path / "converted"
  assert cli.main(["convert", "--model", str(hf_dir), "--output_dir", str(out)]) == 0
  printed = capsys.readouterr().out
  assert (
    "DecoderConfig" in printed and "llama, 2 layers" in printed and "tokenizer.model" in printed
  )
  assert (out / "tokenizer.model").is_file()
  assert json.loads((out / "config.json").read_text())["model_type"] == "llama"
  converted = resolve.load_model(str(out))
  assert converted.config == original.config
  _assert_same(converted.params, original.params)
  text = "hello world </s> café"
  assert converted.vocab.encode_for_model(text) == original.vocab.encode_for_model(text)
  assert converted.vocab.prefix_ids == original.vocab.prefix_ids == (1,)
  # Restored straight into the mesh shardings.
  mesh = partitioning.make_mesh(8, 1)
  sharded = resolve.load_model(str(out), mesh=mesh, dtype="bfloat16")
  assert sharded.config.dtype == "bfloat16"
  assert isinstance(orbax_io.load_config(out), DecoderConfig)
  _assert_same(sharded.params, original.params)
