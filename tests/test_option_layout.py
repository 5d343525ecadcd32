"""Options scored in one shared-start decoder row equal each option scored in a row of its own;
absorbed cross-attention equals projected keys/values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_tiny_hf_t5, make_tiny_hf_t5

from robust_prompt.model import option_layout
from robust_prompt.model.attention import MultiHeadAttention, absorbed_is_cheaper, mask_to_bias
from robust_prompt.model.layers import Dense
from robust_prompt.model.scoring import option_log_probs, score_with_encoded
from robust_prompt.model.t5 import T5


@pytest.fixture(scope="module", params=["t5_1_0", "t5_1_1"])
def tiny(request, tmp_path_factory):
  out = make_tiny_hf_t5(tmp_path_factory.mktemp(f"layout_{request.param}"), request.param, None)
  config, tree, _ = load_tiny_hf_t5(out)
  return config, tree


def test_shared_start_layout_structure():
  layout = option_layout.shared_start_layout(2, 3)
  assert layout.length == 5
  # Positions: 0 start; 1, 2 option 0 (depths 1, 2); 3, 4 option 1 (depths 1, 2).
  np.testing.assert_array_equal(layout.token_index, [[1, 2], [3, 4]])
  np.testing.assert_array_equal(layout.read_index, [[0, 1, 2], [0, 3, 4]])
  expected_visible = np.array(
    [
      [1, 0, 0, 0, 0],
      [1, 1, 0, 0, 0],
      [1, 1, 1, 0, 0],
      [1, 0, 0, 1, 0],
      [1, 0, 0, 1, 1],
    ],
    bool,
  )
  np.testing.assert_array_equal(layout.decoder.visible, expected_visible)
  depth = np.array([0, 1, 2, 1, 2])
  np.testing.assert_array_equal(layout.decoder.relative_position, depth[None] - depth[:, None])
  assert option_layout.shared_start_layout(2, 3) is layout  # cached: one trace-time constant
  single = option_layout.shared_start_layout(4, 1)  # options of EOS only: just the start
  assert single.length == 1 and single.read_index.shape == (4, 1)
  with pytest.raises(ValueError, match="O >= 1"):
    option_layout.shared_start_layout(0, 2)


@pytest.mark.parametrize("o,s", [(3, 4), (4, 2), (2, 1)])
def test_shared_start_scores_equal_one_row_per_option(tiny, o, s):
  """Per-token log-probs of O options in one shared row == each option on its own row (HF's
  way), including options of different lengths and a dummy (all-padding) option."""
  config, tree = tiny
  model = T5(config)
  b, t = 3, 9
  rng = np.random.default_rng(o * 10 + s)
  ids = rng.integers(2, 32128, size=(b, t)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[1, 5:] = 0
  lengths = rng.integers(1, s + 1, size=(b, o))
  lengths[2, -1] = 0  # a dummy option, as the option-count bucket adds
  option_mask = (np.arange(s)[None, None, :] < lengths[..., None]).astype(np.int32)
  option_ids = rng.integers(2, 32128, size=(b, o, s)).astype(np.int32) * option_mask
  has = lengths > 0
  option_ids[has, lengths[has] - 1] = 1  # EOS last

  @jax.jit
  def both(params, ids, mask, option_ids, option_mask):
    encoded = model.apply({"params": params}, ids, mask, method=T5.encode)
    shared = option_log_probs(model, params, encoded, mask, option_ids, option_mask)
    index = jnp.repeat(jnp.arange(b), o)
    separate, _ = score_with_encoded(
      model,
      params,
      encoded,
      mask,
      option_ids.reshape(b * o, s),
      option_mask.reshape(b * o, s),
      encoder_index=index,
    )
    return shared, separate.reshape(b, o)

  shared, separate = both(tree, ids, mask, option_ids, option_mask)
  assert shared.shape == (b, o, s)
  assert np.all(np.asarray(shared)[option_mask == 0] == 0.0)
  np.testing.assert_allclose(np.asarray(shared).sum(-1), np.asarray(separate), rtol=1e-5, atol=1e-4)
  # Different options score differently: the options did not all read the same position.
  row = np.asarray(shared).sum(-1)[0]
  for i in range(o):
    for j in range(i):
      if not np.array_equal(option_ids[0, i], option_ids[0, j]):
        assert abs(row[i] - row[j]) > 1e-3


def test_layout_of_the_wrong_length_is_refused(tiny):
  config, tree = tiny
  layout = option_layout.shared_start_layout(2, 3)  # 5 positions
  with pytest.raises(ValueError, match="5 positions, not 4"):
    T5(config).apply(
      {"params": tree},
      np.zeros((1, 3, config.d_model), np.float32),
      np.ones((1, 3), np.int32),
      np.zeros((1, 4), np.int32),
      layout=layout.decoder,
      method=T5.decode,
    )


@pytest.mark.parametrize("mode", ["plain", "kv_index"])
def test_absorbed_cross_attention_equals_projected(mode):
  """`(q Wk^T) . kv` and `(w kv) Wv` give the numbers of projecting keys and values, under jit,
  for plain rows and gathered inputs."""
  n, d, h, b, q_len, k_len = 4, 8, 32, 3, 5, 7
  rng = np.random.default_rng(0)
  kv = rng.normal(size=(b, k_len, h)).astype(np.float32)
  mask = np.ones((b, k_len), np.int32)
  mask[1, 4:] = 0
  kwargs, rows, mask_rows = {}, b, mask
  if mode == "kv_index":
    index = np.array([2, 0, 0, 1], np.int32)
    kwargs, rows, mask_rows = {"kv_index": index}, len(index), mask[index]
  x = rng.normal(size=(rows, q_len, h)).astype(np.float32)
  bias = mask_to_bias(mask_rows)[:, None, None, :]
  projected = MultiHeadAttention(num_heads=n, head_dim=d, absorb_cross=False)
  absorbed = MultiHeadAttention(num_heads=n, head_dim=d, absorb_cross=True)
  params = projected.init(jax.random.PRNGKey(1), x, kv, None, bias, is_cross=True, **kwargs)

  @jax.jit
  def run(params, x, kv):
    a = projected.apply(params, x, kv, None, bias, is_cross=True, **kwargs)
    b_ = absorbed.apply(params, x, kv, None, bias, is_cross=True, **kwargs)
    return a, b_

  a, b_ = run(params, x, kv)
  assert a.shape == b_.shape == (rows, q_len, h)
  np.testing.assert_allclose(np.asarray(b_), np.asarray(a), rtol=1e-5, atol=1e-5)
  # Self-attention is never absorbed (its keys are the queries): same numbers either way.
  self_a = projected.apply(params, x, x)
  np.testing.assert_array_equal(np.asarray(absorbed.apply(params, x, x)), np.asarray(self_a))


def test_absorbed_is_chosen_for_few_queries_over_long_inputs():
  # T5-small scoring 4 one-letter options (5 shared decoder positions) against 96 input tokens.
  assert absorbed_is_cheaper(16, 5, 16, 96, 512, 64)
  # A long decoder sequence against a short input: projecting keys/values is cheaper.
  assert not absorbed_is_cheaper(16, 256, 16, 32, 512, 64)


def test_dense_returns_its_kernel():
  dense = Dense(3, ("embed", "mlp"))
  params = dense.init(jax.random.PRNGKey(0), jnp.ones((2, 4)))
  kernel = dense.apply(params, None, in_features=4)
  np.testing.assert_array_equal(np.asarray(kernel), np.asarray(params["params"]["kernel"].value))
  x = np.arange(8, dtype=np.float32).reshape(2, 4)
  np.testing.assert_allclose(np.asarray(dense.apply(params, x)), x @ np.asarray(kernel), rtol=1e-6)
  for bad in [dict(x=None), dict(x=x, in_features=4)]:
    with pytest.raises(ValueError, match="either an input or in_features"):
      dense.apply(params, bad.pop("x"), **bad)
