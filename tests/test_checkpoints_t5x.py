"""T5X checkpoints: the real legacy checkpoint in ../shared, an orbax-based T5X fixture, errors."""

import shutil

import jax
import msgpack
import numpy as np
import pytest
from helpers import tiny_t5_config

from robust_prompt.checkpoints import resolve, t5x
from robust_prompt.checkpoints.hf_names import CheckpointMismatchError, tree_to_hf_state_dict

# The architecture of ../shared/fixtures/t5x_t5_1_1_tiny (see ../shared/README.md): T5 1.1.
TINY_T5X = tiny_t5_config(
  vocab_size=32128,
  d_model=4,
  num_heads=2,
  head_dim=2,
  d_ff=8,
  relative_attention_num_buckets=4,
  relative_attention_max_distance=8,
)


@pytest.fixture(scope="module")
def t5x_params(t5x_tiny_checkpoint):
  return t5x.load_t5x(t5x_tiny_checkpoint, TINY_T5X)


def _flat(tree):
  return {"/".join(k.key for k in p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_real_t5x_checkpoint_loads_and_skips_optimizer_state(t5x_tiny_checkpoint, t5x_params):
  flat = _flat(t5x_params)
  assert set(flat) == set(t5x.expected_param_shapes(TINY_T5X))
  assert flat["token_embedder/embedding"].shape == (32128, 4)
  assert flat["decoder/logits_dense/kernel"].shape == (4, 32128)
  assert flat["encoder/relpos_bias/rel_embedding"].shape == (2, 4)
  assert all(x.dtype == np.float32 for x in flat.values())
  # The file really holds Adafactor state beside the parameters; none of it is returned.
  raw = msgpack.unpackb(
    (t5x_tiny_checkpoint / "checkpoint").read_bytes(), ext_hook=lambda c, d: None
  )
  assert "param_states" in raw["optimizer"]["state"]
  assert not {"state", "param_states", "optimizer", "target"} & set(t5x_params)
  # Inline (msgpack) and TensorStore (zarr) arrays are both real values, not placeholders.
  assert np.std(flat["token_embedder/embedding"]) > 0
  np.testing.assert_allclose(
    flat["encoder/encoder_norm/scale"],
    [0.93264055, 1.02932, 0.98174715, 0.98736763],
    rtol=1e-6,
  )


def test_real_t5x_logits_match_pytorch(t5x_params):
  import torch
  import transformers

  from robust_prompt.model.t5 import T5

  hf_config = transformers.T5Config(**TINY_T5X.to_hf_dict())
  torch_model = transformers.T5ForConditionalGeneration(hf_config).eval()
  # transformers 5 always ties lm_head to shared at construction (tie_word_embeddings=False only
  # turns off the d_model**-0.5 rescaling); from_pretrained unties when a checkpoint holds a
  # distinct lm_head. Untie by hand so load_state_dict gives T5 1.1's separate output layer.
  torch_model.lm_head.weight = torch.nn.Parameter(torch_model.lm_head.weight.detach().clone())
  sd = {
    k: torch.from_numpy(np.array(v)) for k, v in tree_to_hf_state_dict(t5x_params, TINY_T5X).items()
  }
  torch_model.load_state_dict(sd, strict=True)
  # Untied T5 1.1: the output layer must be the checkpoint's logits_dense, not the embedding.
  np.testing.assert_array_equal(
    torch_model.lm_head.weight.detach().numpy(), t5x_params["decoder"]["logits_dense"]["kernel"].T
  )
  np.testing.assert_array_equal(
    torch_model.shared.weight.detach().numpy(), t5x_params["token_embedder"]["embedding"]
  )
  ids = np.array([[8774, 296, 5, 1, 0, 0], [37, 2335, 1, 0, 0, 0]], np.int32)
  mask = (ids != 0).astype(np.int32)
  dec = np.array([[0, 8774, 296, 1], [0, 37, 1, 0]], np.int32)
  dec_mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0]], np.int32)
  with torch.no_grad():
    want = torch_model(
      input_ids=torch.tensor(ids, dtype=torch.long),
      attention_mask=torch.tensor(mask, dtype=torch.long),
      decoder_input_ids=torch.tensor(dec, dtype=torch.long),
      decoder_attention_mask=torch.tensor(dec_mask, dtype=torch.long),
    ).logits.numpy()
  got = np.asarray(T5(TINY_T5X).apply({"params": t5x_params}, ids, mask, dec, dec_mask))
  assert np.abs(want).max() > 1e-3  # not a degenerate comparison
  np.testing.assert_allclose(got[dec_mask == 1], want[dec_mask == 1], atol=1e-4, rtol=0)


def test_orbax_based_t5x_checkpoint(t5x_params, tmp_path):
  import orbax.checkpoint as ocp

  state = {
    "step": np.int32(3),
    "param_states": jax.tree.map(lambda x: {"v": np.ones_like(x)}, t5x_params),
  }
  ocp.PyTreeCheckpointer().save(
    tmp_path / "flat" / "checkpoint_3", {"target": t5x_params, "state": state}
  )
  # Newer T5X (CheckpointManager) keeps the train state in a `state/` item directory.
  ocp.PyTreeCheckpointer().save(
    tmp_path / "managed" / "checkpoint_3" / "state", {"target": t5x_params, "state": state}
  )
  for ckpt in (tmp_path / "flat" / "checkpoint_3", tmp_path / "managed" / "checkpoint_3"):
    assert resolve.detect_kind(str(ckpt)) == "t5x"
    loaded = t5x.load_t5x(ckpt, TINY_T5X)
    flat_a, flat_b = _flat(loaded), _flat(t5x_params)
    assert set(flat_a) == set(flat_b)
    for k in flat_a:
      assert isinstance(flat_a[k], np.ndarray)
      np.testing.assert_array_equal(flat_a[k], flat_b[k])


def test_wrong_config_names_the_key_and_both_shapes(t5x_tiny_checkpoint):
  with pytest.raises(CheckpointMismatchError) as info:
    t5x.load_t5x(t5x_tiny_checkpoint, TINY_T5X.replace(d_ff=16))
  msg = str(info.value)
  assert "'encoder/layers_0/mlp/wi_0/kernel': checkpoint shape (4, 8) != shape (4, 16)" in msg
  with pytest.raises(CheckpointMismatchError, match=r"missing parameter 'encoder/layers_2/"):
    t5x.load_t5x(t5x_tiny_checkpoint, TINY_T5X.replace(num_encoder_layers=3))
  with pytest.raises(
    CheckpointMismatchError,
    match=r"unexpected parameter 'decoder/logits_dense/kernel' with shape \(4, 32128\)",
  ):
    t5x.load_t5x(t5x_tiny_checkpoint, TINY_T5X.replace(tie_word_embeddings=True))


def test_load_model_needs_config_and_vocab_for_t5x(t5x_tiny_checkpoint, spiece_path):
  with pytest.raises(ValueError, match=r"--gin_file gin_configs/models/<size>\.gin"):
    resolve.load_model(str(t5x_tiny_checkpoint), vocab_path=spiece_path)
  with pytest.raises(ValueError, match="--vocab"):
    resolve.load_model(str(t5x_tiny_checkpoint), config=TINY_T5X)
  loaded = resolve.load_model(str(t5x_tiny_checkpoint), config=TINY_T5X, vocab_path=spiece_path)
  assert loaded.vocab.vocab_size == 32100 and loaded.config == TINY_T5X


def test_missing_array_directory_is_named(t5x_tiny_checkpoint, tmp_path):
  broken = tmp_path / "checkpoint_3"
  shutil.copytree(t5x_tiny_checkpoint, broken)
  # ../shared is read-only; make the copy writable so that one array directory can be removed.
  for path in [broken, *broken.rglob("*")]:
    path.chmod(0o755 if path.is_dir() else 0o644)
  shutil.rmtree(broken / "target.encoder.layers_1.mlp.wo.kernel")
  with pytest.raises(ValueError, match=r"cannot read array 'encoder/layers_1/mlp/wo/kernel'"):
    t5x.load_t5x(broken, TINY_T5X)
