"""Parity of our Flax T5 with transformers' PyTorch T5ForConditionalGeneration (T5 1.0 and 1.1)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_tiny_hf_t5, make_tiny_hf_t5
from safetensors.numpy import save_file

from robust_prompt.checkpoints.hf_names import (
  CheckpointMismatchError,
  hf_state_dict_to_tree,
  tree_to_hf_state_dict,
)
from robust_prompt.model.attention import relative_position_bucket
from robust_prompt.model.config import T5Config
from robust_prompt.model.t5 import T5

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module", params=["t5_1_0", "t5_1_1"])
def tiny(request, tmp_path_factory):
  """(config, params tree, HF torch model, raw state dict) of a random tiny saved HF T5."""
  out = make_tiny_hf_t5(tmp_path_factory.mktemp(f"parity_{request.param}"), request.param, None)
  config, tree, sd = load_tiny_hf_t5(out)
  return config, tree, transformers.T5ForConditionalGeneration.from_pretrained(out).eval(), sd


def _hf_logits(hf, ids, mask, dec):
  """The PyTorch reference: `hf`'s teacher-forced logits `[B, S, V]` (numpy)."""
  with torch.no_grad():
    return hf(
      input_ids=torch.tensor(ids, dtype=torch.long),
      attention_mask=torch.tensor(mask),
      decoder_input_ids=torch.tensor(dec, dtype=torch.long),
    ).logits.numpy()


def _batch(seed=0, b=3, t=11, s=7):
  rng = np.random.default_rng(seed)
  ids = rng.integers(2, 32128, size=(b, t)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[1, 6:] = 0  # a padded row
  ids[1, 6:] = 0
  dec = rng.integers(2, 32128, size=(b, s)).astype(np.int32)
  dec[:, 0] = 0
  return ids, mask, dec


def test_config_roundtrip(tiny, tmp_path):
  config = tiny[0]
  assert T5Config.from_hf_dict(config.to_hf_dict()) == config
  assert T5Config.from_json(config.to_json()) == config
  config.to_json(tmp_path / "config.json")
  assert T5Config.from_json(tmp_path / "config.json") == config
  (tmp_path / "bad.json").write_text('{"d_model": 8,\n  oops}')
  with pytest.raises(ValueError, match="bad.json: line 2"):
    T5Config.from_json(tmp_path / "bad.json")
  with pytest.raises(ValueError, match="unknown T5Config fields"):
    T5Config.from_dict({"d_modle": 8})
  assert config.is_gated == (config.feed_forward_proj == "gated-gelu")


def test_from_hf_dict_fields():
  cfg = T5Config.from_hf_dict(
    {
      "vocab_size": 100,
      "d_model": 16,
      "d_kv": 4,
      "d_ff": 8,
      "num_layers": 3,
      "num_decoder_layers": None,
      "num_heads": 2,
      "feed_forward_proj": "gated-gelu",
      "tie_word_embeddings": False,
    }
  )
  assert (cfg.num_encoder_layers, cfg.num_decoder_layers, cfg.head_dim) == (3, 3, 4)
  assert cfg.activation == "gelu_tanh" and not cfg.tie_word_embeddings
  with pytest.raises(ValueError, match="feed_forward_proj"):
    T5Config(feed_forward_proj="swish")


def test_logits_match_pytorch(tiny):
  config, tree, hf, _ = tiny
  ids, mask, dec = _batch()
  ref = _hf_logits(hf, ids, mask, dec)
  model = T5(config)
  logits = jax.jit(model.apply)({"params": tree}, ids, mask, dec)
  assert logits.dtype == jnp.float32 and logits.shape == ref.shape
  assert np.abs(ref).max() > 0.5  # the check below is not trivially satisfied
  np.testing.assert_allclose(np.asarray(logits), ref, atol=1e-4, rtol=0)


def test_encode_embeds_equals_encode(tiny):
  config, tree, _, _ = tiny
  ids, mask, _ = _batch(1)
  model = T5(config)
  v = {"params": tree}
  enc = model.apply(v, ids, mask, method=T5.encode)
  embeds = model.apply(v, ids, method=T5.embed)
  assert embeds.shape == (*ids.shape, config.d_model)
  enc2 = model.apply(v, embeds, mask, method=T5.encode_embeds)
  np.testing.assert_array_equal(np.asarray(enc), np.asarray(enc2))


def test_state_dict_roundtrip_and_errors(tiny):
  config, tree, hf, sd = tiny
  back = tree_to_hf_state_dict(tree, config)
  ref = {k: v.numpy() for k, v in hf.state_dict().items()}
  assert set(back) == set(ref)
  for k, v in ref.items():
    np.testing.assert_array_equal(back[k], v, err_msg=k)

  bad = dict(sd)
  del bad["encoder.block.1.layer.0.SelfAttention.q.weight"]
  bad["decoder.final_layer_norm.weight"] = np.zeros((3,), np.float32)
  bad["encoder.block.9.layer.0.layer_norm.weight"] = np.zeros((3,), np.float32)
  with pytest.raises(CheckpointMismatchError) as err:
    hf_state_dict_to_tree(bad, config)
  msg = str(err.value)
  assert "encoder.block.1.layer.0.SelfAttention.q.weight" in msg
  assert "decoder.final_layer_norm.weight: checkpoint has (3,)" in msg and "(32,)" in msg
  assert "unexpected keys: encoder.block.9.layer.0.layer_norm.weight" in msg
  assert isinstance(err.value, ValueError)


def test_exported_state_dict_loads_in_transformers(tiny, tmp_path):
  """Our tree -> HF state dict + config.json -> `from_pretrained` gives the same logits."""
  config, tree, _, _ = tiny
  tree = jax.tree_util.tree_map(np.array, tree)
  if not config.tie_word_embeddings:  # make the output layer really distinct from `shared`
    tree["decoder"]["logits_dense"]["kernel"] = tree["decoder"]["logits_dense"]["kernel"][:, ::-1]
  sd = tree_to_hf_state_dict(tree, config, include_tied=False)
  save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, tmp_path / "model.safetensors")
  (tmp_path / "config.json").write_text(json.dumps(config.to_hf_dict()))
  hf = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path).eval()
  ids, mask, dec = _batch(3)
  ref = _hf_logits(hf, ids, mask, dec)
  ours = jax.jit(T5(config).apply)({"params": tree}, ids, mask, dec)
  np.testing.assert_allclose(np.asarray(ours), ref, atol=1e-4, rtol=0)
  # Loading back, with only one copy of the tied embedding present, gives the same tree.
  sd.pop("shared.weight")
  sd["encoder.embed_tokens.weight"] = tree["token_embedder"]["embedding"]
  back = hf_state_dict_to_tree(sd, config)
  jax.tree_util.tree_map(np.testing.assert_array_equal, back, tree)


def test_wrong_architecture_is_reported(tiny):
  config, _, _, sd = tiny
  other = config.replace(
    feed_forward_proj="relu" if config.is_gated else "gated-gelu",
  )
  with pytest.raises(CheckpointMismatchError, match="DenseReluDense"):
    hf_state_dict_to_tree(sd, other)


def test_relative_position_buckets_match_pytorch():
  from transformers.models.t5.modeling_t5 import T5Attention

  rel = np.arange(-1200, 1201)
  for buckets, max_distance in [(32, 128), (8, 20), (64, 256)]:
    for bidirectional in (True, False):
      ref = T5Attention._relative_position_bucket(
        torch.tensor(rel),
        bidirectional=bidirectional,
        num_buckets=buckets,
        max_distance=max_distance,
      ).numpy()
      ours = relative_position_bucket(rel, bidirectional, buckets, max_distance)
      np.testing.assert_array_equal(ours, ref)


def test_bfloat16_activations_smoke(tiny):
  config, tree, _, _ = tiny
  ids, mask, dec = _batch(2)
  f32 = jax.jit(T5(config).apply)({"params": tree}, ids, mask, dec)
  model = T5(config.replace(dtype="bfloat16"))
  logits = jax.jit(model.apply)({"params": tree}, ids, mask, dec)
  enc = model.apply({"params": tree}, ids, mask, method=T5.encode)
  assert enc.dtype == jnp.bfloat16
  assert logits.dtype == jnp.float32
  assert np.isfinite(np.asarray(logits)).all()
  # bf16 keeps ~3 significant digits; the greedy choice agrees on most positions.
  agree = np.mean(np.argmax(np.asarray(logits), -1) == np.argmax(np.asarray(f32), -1))
  assert agree > 0.6
