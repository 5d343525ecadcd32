"""Mesh(data, model) sharding: specs, placement (really split), sharded forward == single device."""

import jax
import numpy as np
import pytest
from flax.core import meta
from helpers import tiny_t5_config
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from robust_prompt import partitioning
from robust_prompt.model.t5 import T5

CONFIG = tiny_t5_config(
  vocab_size=256, d_model=32, head_dim=8, d_ff=64, num_encoder_layers=1,
  relative_attention_max_distance=20,
)  # fmt: skip


@pytest.fixture(scope="module")
def setup():
  if jax.device_count() < 8:
    pytest.skip("needs 8 (fake CPU) devices; tests/conftest.py sets XLA_FLAGS")
  model = T5(CONFIG)
  rng = np.random.default_rng(0)
  ids = rng.integers(2, CONFIG.vocab_size, size=(8, 12)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[3, 7:] = 0
  dec = rng.integers(2, CONFIG.vocab_size, size=(8, 5)).astype(np.int32)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), ids, mask, dec, np.ones_like(dec))
  params = jax.tree_util.tree_map(np.asarray, meta.unbox(variables)["params"])
  ref = np.asarray(jax.jit(model.apply)({"params": params}, ids, mask, dec))
  return model, params, (ids, mask, dec), ref


def test_parse_mesh_spec():
  assert partitioning.parse_mesh_spec("data=2,model=4") == (2, 4)
  assert partitioning.parse_mesh_spec("model=-1, data=1") == (1, -1)
  assert partitioning.parse_mesh_spec("model=2") == (-1, 2)
  for bad in ("data=2,model", "dta=2", "data=x", "data=0", "data=2,data=3"):
    with pytest.raises(ValueError, match="mesh spec"):
      partitioning.parse_mesh_spec(bad)


def test_make_mesh():
  n = jax.device_count()
  mesh = partitioning.make_mesh(-1, 1)
  assert mesh.axis_names == ("data", "model") and mesh.devices.shape == (n, 1)
  assert partitioning.make_mesh(1, -1).devices.shape == (1, n)
  sharding = partitioning.shardings_for(partitioning.make_mesh(2, -1), "batch", "length")
  assert sharding.spec == P("data", None)
  with pytest.raises(ValueError, match="divide"):
    partitioning.make_mesh(-1, 3 if n % 3 else n + 1)
  with pytest.raises(ValueError, match="needs"):
    partitioning.make_mesh(n, 2)


def test_logical_specs_follow_design(setup):
  model = setup[0]
  specs = partitioning.logical_param_specs(model, CONFIG)
  assert specs["token_embedder"]["embedding"] == P("vocab", "embed")
  layer = specs["encoder"]["layers_0"]
  assert layer["attention"]["query"]["kernel"] == P("embed", "joined_kv")
  assert layer["attention"]["out"]["kernel"] == P("joined_kv", "embed")
  assert layer["mlp"]["wi_0"]["kernel"] == P("embed", "mlp")
  assert layer["mlp"]["wo"]["kernel"] == P("mlp", "embed")
  assert layer["pre_attention_layer_norm"]["scale"] == P("embed")
  assert specs["decoder"]["relpos_bias"]["rel_embedding"] == P("heads", "relpos_buckets")
  assert specs["decoder"]["logits_dense"]["kernel"] == P("embed", "vocab")


@pytest.mark.parametrize("data,model_size", [(2, 4), (8, 1)])
def test_sharded_forward_equals_single_device(setup, data, model_size):
  model, params, (ids, mask, dec), ref = setup
  mesh = partitioning.make_mesh(data, model_size)
  shardings = partitioning.param_shardings(mesh, partitioning.logical_param_specs(model))
  placed = partitioning.place_params(params, shardings)
  wi = placed["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"]
  emb = placed["token_embedder"]["embedding"]
  # Each device holds only its slice of the model-parallel dimensions.
  assert {s.data.shape for s in wi.addressable_shards} == {(32, 64 // model_size)}
  assert {s.data.shape for s in emb.addressable_shards} == {(256 // model_size, 32)}
  np.testing.assert_array_equal(
    np.asarray(wi), params["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"]
  )
  with partitioning.mesh_context(mesh):
    out = jax.block_until_ready(jax.jit(model.apply)({"params": placed}, ids, mask, dec))
  assert np.abs(ref).max() > 0.1
  # Under the mesh context the activations' logical constraints apply: batch over "data",
  # vocab over "model".
  expected = NamedSharding(mesh, P("data", None, "model"))
  assert out.sharding.is_equivalent_to(expected, out.ndim), out.sharding
  np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5, rtol=0)


def test_uneven_dimensions_are_replicated():
  """6 heads or a 250-row vocab over model=4: jax needs even tiling, so those dims replicate."""
  mesh = partitioning.make_mesh(2, 4)
  specs = {"emb": P("vocab", "embed"), "rel": P("heads", "relpos_buckets"), "k": P("embed", "mlp")}
  tree = {
    "emb": np.arange(250 * 8, dtype=np.float32).reshape(250, 8),
    "rel": np.ones((6, 32), np.float32),
    "k": np.ones((8, 16), np.float32),
  }
  relaxed = partitioning.param_shardings(mesh, specs, shapes=tree)
  assert relaxed["emb"].spec == P(None, None) and relaxed["k"].spec == P(None, "model")
  placed = partitioning.place_params(tree, partitioning.param_shardings(mesh, specs))
  assert placed["rel"].sharding.is_fully_replicated
  assert {s.data.shape for s in placed["k"].addressable_shards} == {(8, 4)}
  np.testing.assert_array_equal(np.asarray(placed["emb"]), tree["emb"])


def test_place_params_structure_mismatch(setup):
  model, params = setup[0], setup[1]
  mesh = partitioning.make_mesh(8, 1)
  shardings = partitioning.param_shardings(mesh, partitioning.logical_param_specs(model))
  with pytest.raises(ValueError, match="encoder/encoder_norm/scale"):
    partitioning.place_params({**params, "encoder": {}}, shardings)
  with pytest.raises(ValueError, match="params"):
    partitioning.place_params({"params": params}, shardings)


def test_init_sharded(setup):
  model = setup[0]
  mesh = partitioning.make_mesh(2, 4)
  params = partitioning.init_sharded(model, CONFIG, mesh, rng=jax.random.PRNGKey(1))
  kernel = params["decoder"]["layers_1"]["self_attention"]["query"]["kernel"]
  assert kernel.shape == (32, 32)
  assert kernel.sharding.spec == P(None, "model")
  assert {s.data.shape for s in kernel.addressable_shards} == {(32, 8)}
  scale = params["encoder"]["encoder_norm"]["scale"]
  assert scale.sharding.is_fully_replicated
  summary = partitioning.tree_sharding_summary(params)
  assert summary["token_embedder/embedding"] == str(P("model", None))
