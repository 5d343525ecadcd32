"""Soft prompts: initializers, the prompt parameter's logical axes, prepending, .npy IO."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_prompt import partitioning
from robust_prompt.model import soft_prompt as prompt_lib

RNG = jax.random.PRNGKey(0)
EMBEDDING = np.arange(50 * 6, dtype=np.float32).reshape(50, 6)


def test_uniform_is_in_range_and_deterministic():
  init = prompt_lib.uniform(0.25)
  a = init(RNG, (7, 6), jnp.float32)
  assert a.shape == (7, 6) and a.dtype == jnp.float32
  assert float(jnp.abs(a).max()) <= 0.25
  assert float(jnp.abs(a).max()) > 0.1  # not degenerate
  np.testing.assert_array_equal(a, init(RNG, (7, 6), jnp.float32))
  assert not np.array_equal(a, init(jax.random.PRNGKey(1), (7, 6), jnp.float32))


def test_from_vocab_copies_rows_among_the_first_ids():
  init = prompt_lib.from_vocab(EMBEDDING, num_ids=5)
  out = np.asarray(init(RNG, (20, 6), jnp.float32))
  rows = {tuple(r) for r in EMBEDDING[:5]}
  assert all(tuple(r) in rows for r in out)
  assert len({tuple(r) for r in out}) > 1  # sampled, not one row repeated
  full = np.asarray(prompt_lib.from_vocab(EMBEDDING)(RNG, (30, 6), jnp.float32))
  assert any(tuple(r) not in rows for r in full)
  with pytest.raises(ValueError, match="num_ids"):
    prompt_lib.from_vocab(EMBEDDING, num_ids=51)
  with pytest.raises(ValueError, match="width"):
    prompt_lib.from_vocab(EMBEDDING)(RNG, (3, 5), jnp.float32)


def test_from_text_tiles_and_truncates():
  init = prompt_lib.from_text(EMBEDDING, [3, 4, 9])
  np.testing.assert_array_equal(init(RNG, (7, 6), jnp.float32), EMBEDDING[[3, 4, 9, 3, 4, 9, 3]])
  np.testing.assert_array_equal(init(RNG, (2, 6), jnp.float32), EMBEDDING[[3, 4]])
  with pytest.raises(ValueError, match="no tokens"):
    prompt_lib.from_text(EMBEDDING, [])


def test_from_npy_round_trip_and_shape_mismatch(tmp_path):
  value = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
  path = tmp_path / "p.npy"
  prompt_lib.save_prompt(path, jnp.asarray(value))
  np.testing.assert_array_equal(prompt_lib.load_prompt(path, width=6), value)
  np.testing.assert_array_equal(prompt_lib.from_npy(path)(RNG, (5, 6), jnp.float32), value)
  with pytest.raises(ValueError, match=r"shape \(5, 6\).*\(4, 6\)"):
    prompt_lib.from_npy(path)(RNG, (4, 6), jnp.float32)
  with pytest.raises(ValueError, match="d_model 8"):
    prompt_lib.load_prompt(path, width=8)
  with pytest.raises(FileNotFoundError, match="no such prompt"):
    prompt_lib.load_prompt(tmp_path / "missing.npy")
  np.save(tmp_path / "bad.npy", np.zeros(3))
  with pytest.raises(ValueError, match=r"\[P, H\]"):
    prompt_lib.load_prompt(tmp_path / "bad.npy")


def test_initializer_by_name():
  assert prompt_lib.initializer_by_name("uniform", scale=0.1)(RNG, (2, 6)).shape == (2, 6)
  out = prompt_lib.initializer_by_name("from_text", embedding=EMBEDDING, token_ids=[1])(RNG, (2, 6))
  np.testing.assert_array_equal(out, EMBEDDING[[1, 1]])
  with pytest.raises(ValueError, match="needs the model's token embedding"):
    prompt_lib.initializer_by_name("from_vocab")
  with pytest.raises(ValueError, match="unknown prompt initializer"):
    prompt_lib.initializer_by_name("zeros")


def test_soft_prompt_param_has_logical_axes_and_is_replicated():
  module = prompt_lib.SoftPrompt(length=4, width=6, init_fn=prompt_lib.uniform())
  variables = module.init(RNG)
  specs = nn.get_partition_spec(variables)["params"]["prompt"]
  assert tuple(specs) == prompt_lib.PROMPT_AXES
  mesh = partitioning.make_mesh(2, 4)
  sharding = nn.logical_to_mesh_sharding(specs, mesh, list(partitioning.DEFAULT_RULES))
  assert sharding.is_fully_replicated
  value = module.apply(variables)
  assert value.shape == (4, 6)


def test_prepend_prompt():
  prompt = jnp.arange(6, dtype=jnp.float32).reshape(2, 3)
  embeds = jnp.ones((4, 5, 3)) * 7
  mask = jnp.asarray([[1, 1, 0, 0, 0]] * 4, jnp.int32)
  out, out_mask = prompt_lib.prepend_prompt(prompt, embeds, mask)
  assert out.shape == (4, 7, 3) and out_mask.shape == (4, 7)
  np.testing.assert_array_equal(out[:, :2], np.broadcast_to(prompt, (4, 2, 3)))
  np.testing.assert_array_equal(out[:, 2:], embeds)
  np.testing.assert_array_equal(out_mask[0], [1, 1, 1, 1, 0, 0, 0])
  assert out_mask.dtype == mask.dtype
  with pytest.raises(ValueError, match="does not fit"):
    prompt_lib.prepend_prompt(jnp.zeros((2, 4)), embeds, mask)


def test_empty_and_npz_prompt_files_are_clear_errors(tmp_path):
  import numpy as np
  import pytest

  empty = tmp_path / "p.npy"
  empty.write_bytes(b"")
  with pytest.raises(ValueError, match="0-byte"):
    prompt_lib.load_prompt(empty)
  npz = tmp_path / "p.npz"
  np.savez(npz, prompt=np.zeros((2, 4), np.float32))
  with pytest.raises(ValueError, match=r"\.npz archive \(arrays \['prompt'\]\)"):
    prompt_lib.load_prompt(npz)
