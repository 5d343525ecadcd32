"""Our orbax parameter checkpoints: round trip, metadata, restoring straight onto a mesh."""

import json

import jax
import numpy as np
import pytest
import seqio
from helpers import tiny_t5_config
from jax.sharding import PartitionSpec as P

from robust_prompt import partitioning
from robust_prompt.checkpoints import orbax_io, resolve
from robust_prompt.model.t5 import T5

# Divisible by the 4-way model axis everywhere (vocab, heads * head_dim, d_ff).
CONFIG = tiny_t5_config(vocab_size=512)


@pytest.fixture(scope="module")
def params():
  ids = np.ones((1, 3), np.int32)
  variables = T5(CONFIG).init(jax.random.PRNGKey(0), ids, ids, ids, ids)
  return jax.tree.map(np.asarray, partitioning.unbox(variables)["params"])


@pytest.fixture(scope="module")
def saved(params, tmp_path_factory):
  return orbax_io.save_params(
    tmp_path_factory.mktemp("ckpt") / "out", params, CONFIG, "byte", source="unit-test"
  )


def _pairs(a, b):
  flat_b = dict(jax.tree_util.tree_flatten_with_path(b)[0])
  flat_a = jax.tree_util.tree_flatten_with_path(a)[0]
  assert len(flat_a) == len(flat_b)
  return [(jax.tree_util.keystr(p), x, flat_b[p]) for p, x in flat_a]


def test_round_trip_is_exact(saved, params):
  assert sorted(p.name for p in saved.iterdir()) == ["config.json", "params", "robust_prompt.json"]
  meta = json.loads((saved / "robust_prompt.json").read_text())
  assert meta["format"] == orbax_io.FORMAT and meta["source"] == "unit-test"
  assert meta["vocab"] == {"kind": "byte", "extra_ids": 0}
  assert orbax_io.load_config(saved) == CONFIG
  assert isinstance(orbax_io.load_vocabulary(saved), seqio.ByteVocabulary)
  loaded = orbax_io.load_params(saved)
  for key, x, y in _pairs(loaded, params):
    assert isinstance(x, np.ndarray), key
    assert x.dtype == y.dtype and x.shape == y.shape, key
    np.testing.assert_array_equal(x, y, err_msg=key)


def test_restores_straight_onto_a_data2_model4_mesh(saved, params):
  mesh = partitioning.make_mesh(2, 4)
  loaded = orbax_io.load_params(saved, mesh=mesh)
  expected_specs = {
    "['token_embedder']['embedding']": P("model", None),
    "['decoder']['logits_dense']['kernel']": P(None, "model"),
    "['encoder']['layers_0']['attention']['query']['kernel']": P(None, "model"),
    "['encoder']['layers_0']['attention']['out']['kernel']": P("model", None),
    "['decoder']['layers_1']['mlp']['wi_0']['kernel']": P(None, "model"),
    "['decoder']['layers_1']['mlp']['wo']['kernel']": P("model", None),
    "['encoder']['relpos_bias']['rel_embedding']": P("model", None),
    "['encoder']['encoder_norm']['scale']": P(None),
  }
  want_shardings = orbax_io.config_param_shardings(CONFIG, mesh)
  seen = 0
  for key, x, y in _pairs(loaded, params):
    assert isinstance(x, jax.Array) and x.sharding.mesh.shape == {"data": 2, "model": 4}
    assert x.sharding.is_equivalent_to(dict(_pairs_shardings(want_shardings))[key], x.ndim), key
    if key in expected_specs:
      seen += 1
      assert x.sharding.is_equivalent_to(
        jax.sharding.NamedSharding(mesh, expected_specs[key]), x.ndim
      ), key
    np.testing.assert_array_equal(np.asarray(x), y, err_msg=key)
  assert seen == len(expected_specs)
  # Sharded along `model`: each device holds a quarter of the embedding rows.
  emb = loaded["token_embedder"]["embedding"]
  assert {s.data.shape for s in emb.addressable_shards} == {
    (CONFIG.vocab_size // 4, CONFIG.d_model)
  }


def _pairs_shardings(tree):
  return [(jax.tree_util.keystr(p), s) for p, s in jax.tree_util.tree_flatten_with_path(tree)[0]]


def test_load_model_on_our_checkpoint(saved, params):
  mesh = partitioning.make_mesh(2, 4)
  loaded = resolve.load_model(str(saved), mesh=mesh, dtype="bfloat16")
  assert loaded.config == CONFIG.replace(dtype="bfloat16")
  assert loaded.source == str(saved)
  assert isinstance(loaded.vocab, seqio.ByteVocabulary)
  for key, x, y in _pairs(loaded.params, params):
    assert x.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(x), y, err_msg=key)


def test_sentencepiece_vocabulary_is_copied_beside_the_params(params, tmp_path, spiece_path):
  out = orbax_io.save_params(tmp_path / "sp", params, CONFIG.replace(vocab_size=32128), spiece_path)
  assert (out / "spiece.model").read_bytes() == spiece_path.read_bytes()
  vocab = orbax_io.load_vocabulary(out)
  assert vocab.sentencepiece_model_file == str(out / "spiece.model")
  assert vocab.vocab_size == 32100


def test_errors(saved, params, tmp_path):
  with pytest.raises(FileExistsError, match="already holds a checkpoint"):
    orbax_io.save_params(saved, params, CONFIG, "byte")
  with pytest.raises(FileNotFoundError, match="no robust_prompt.json"):
    orbax_io.load_params(tmp_path)
  bad = tmp_path / "bad"
  bad.mkdir()
  (bad / "robust_prompt.json").write_text('{"format": "something-else"}')
  (bad / "params").mkdir()
  with pytest.raises(ValueError, match="format is 'something-else'"):
    orbax_io.load_params(bad)
  mesh = partitioning.make_mesh(2, 4)
  other = orbax_io.config_param_shardings(CONFIG.replace(num_decoder_layers=3), mesh)
  with pytest.raises(ValueError, match=r"only in shardings \[.*layers_2"):
    orbax_io.load_params(saved, shardings=other)
