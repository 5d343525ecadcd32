"""Teacher-forced scoring equals PyTorch's per-example summed log-likelihood of the labels."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_tiny_hf_t5, make_tiny_hf_t5

from robust_prompt.model.prompted_t5 import PromptedT5
from robust_prompt.model.scoring import score_with_encoded, shift_right, token_log_probs
from robust_prompt.model.t5 import T5

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module", params=["t5_1_0", "t5_1_1"])
def tiny(request, tmp_path_factory):
  out = make_tiny_hf_t5(tmp_path_factory.mktemp(f"score_{request.param}"), request.param, None)
  config, tree, _ = load_tiny_hf_t5(out)
  return config, tree, transformers.T5ForConditionalGeneration.from_pretrained(out).eval()


def score_targets(model, params, ids, mask, targets, target_mask):
  """The code path the `score` command runs: `PromptedT5.target_scores` (one target per input)."""
  batch = dict(input_ids=ids, input_mask=mask, target_ids=targets, target_mask=target_mask)
  return PromptedT5(model.config).target_scores(params, None, batch)


def _batch(seed=0, b=4, t=10, s=6):
  rng = np.random.default_rng(seed)
  ids = rng.integers(2, 32128, size=(b, t)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[2, 4:] = 0
  ids[2, 4:] = 0
  lengths = np.array([s, 3, 1, 5])  # tokens incl. EOS
  target_mask = (np.arange(s)[None, :] < lengths[:, None]).astype(np.int32)
  targets = rng.integers(2, 32128, size=(b, s)).astype(np.int32) * target_mask
  targets[np.arange(b), lengths - 1] = 1  # EOS last, as HF labels
  return ids, mask, targets, target_mask


def _torch_scores(hf, ids, mask, targets, target_mask):
  labels = torch.tensor(np.where(target_mask == 1, targets, -100), dtype=torch.long)
  with torch.no_grad():
    logits = hf(
      input_ids=torch.tensor(ids, dtype=torch.long),
      attention_mask=torch.tensor(mask),
      labels=labels,
    ).logits
  lp = torch.log_softmax(logits, -1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
  return (lp * torch.tensor(target_mask)).sum(-1).numpy()


def test_shift_right():
  t = jnp.array([[5, 6, 1, 0], [7, 1, 0, 0]])
  np.testing.assert_array_equal(shift_right(t), [[0, 5, 6, 1], [0, 7, 1, 0]])
  np.testing.assert_array_equal(shift_right(t, start_id=3)[:, 0], [3, 3])


def test_token_log_probs_is_log_softmax_gather():
  logits = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 11)) * 4
  targets = jnp.array([[1, 2, 10], [0, 5, 5]])
  expected = jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1)[..., 0]
  np.testing.assert_allclose(token_log_probs(logits, targets), expected, atol=1e-5)


def test_score_targets_matches_pytorch(tiny):
  config, tree, hf = tiny
  ids, mask, targets, target_mask = _batch()
  model = T5(config)
  fn = jax.jit(functools.partial(score_targets, model))
  total, count = fn(tree, ids, mask, targets, target_mask)
  ref = _torch_scores(hf, ids, mask, targets, target_mask)
  np.testing.assert_allclose(np.asarray(total), ref, atol=1e-3, rtol=0)
  np.testing.assert_array_equal(np.asarray(count), target_mask.sum(1))
  # Also the mean NLL that HF reports as `loss` (over all label tokens).
  assert (
    abs(-float(jnp.sum(total)) / target_mask.sum() - _hf_loss(hf, ids, mask, targets, target_mask))
    < 1e-4
  )


def _hf_loss(hf, ids, mask, targets, target_mask):
  labels = torch.tensor(np.where(target_mask == 1, targets, -100), dtype=torch.long)
  with torch.no_grad():
    return float(
      hf(
        input_ids=torch.tensor(ids, dtype=torch.long),
        attention_mask=torch.tensor(mask),
        labels=labels,
      ).loss
    )


def test_score_with_encoded_options(tiny):
  """Rank classification: encode each input once, score O options against it."""
  config, tree, _ = tiny
  ids, mask, targets, target_mask = _batch(1)
  model = T5(config)
  v = {"params": tree}
  encoded = model.apply(v, ids[:2], mask[:2], method=T5.encode)
  # O = 2 options per input: rows [in0/opt0, in0/opt1, in1/opt0, in1/opt1].
  rows = np.array([0, 0, 1, 1])
  total, count = score_with_encoded(model, v, encoded[rows], mask[:2][rows], targets, target_mask)
  ref_total, ref_count = score_targets(
    model, tree, ids[:2][rows], mask[:2][rows], targets, target_mask
  )
  np.testing.assert_allclose(np.asarray(total), np.asarray(ref_total), atol=1e-5)
  np.testing.assert_array_equal(np.asarray(count), np.asarray(ref_count))
  assert (np.asarray(total) < 0).all()


def test_padding_does_not_change_scores(tiny):
  config, tree, _ = tiny
  ids, mask, targets, target_mask = _batch(2)
  model = T5(config)
  a, _ = score_targets(model, tree, ids, mask, targets, target_mask)
  pad = lambda x: np.pad(x, ((0, 0), (0, 3)))
  b, _ = score_targets(model, tree, pad(ids), pad(mask), pad(targets), pad(target_mask))
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)


def _options_batch(seed=3, b=4, t=10, s=7):
  """B inputs (one padded) and R = 10 target rows: 1-4 rows per input, in an irregular order,
  as `batching.pack_ragged` makes them (rows of one input together, the last row padding)."""
  ids, mask, _, _ = _batch(seed, b=b, t=t, s=s)
  encoder_index = np.array([0, 0, 0, 0, 1, 2, 2, 3, 3, 0], np.int32)
  r = len(encoder_index)
  rng = np.random.default_rng(seed + 1)
  lengths = rng.integers(1, s + 1, size=r)
  lengths[-1] = 0  # a padding row (no target), as the pair-count bucket adds
  target_mask = (np.arange(s)[None, :] < lengths[:, None]).astype(np.int32)
  targets = rng.integers(2, 32128, size=(r, s)).astype(np.int32) * target_mask
  targets[np.arange(r - 1), lengths[:-1] - 1] = 1
  return ids, mask, encoder_index, targets, target_mask


def _assert_close_to_scale(actual, desired, relative):
  """|actual - desired| <= relative * max|desired| everywhere (float32 rounding, logits [R,S,V])."""
  actual, desired = np.asarray(actual), np.asarray(desired)
  atol = relative * float(np.abs(desired).max())
  np.testing.assert_allclose(actual, desired, rtol=0, atol=atol)


def _indexed_and_gathered(model):
  """jit(params, ids, mask, index, dec, dec_mask) -> logits ([R,S,V] with encoder_index,
  [R,S,V] on the encoder output gathered by hand); one compilation for both."""

  def fn(params, ids, mask, index, dec, dec_mask):
    v = {"params": params}
    encoded = model.apply(v, ids, mask, method=T5.encode)
    indexed = model.apply(v, encoded, mask, dec, dec_mask, encoder_index=index, method=T5.decode)
    gathered = model.apply(v, encoded[index], mask[index], dec, dec_mask, method=T5.decode)
    return indexed, gathered

  return jax.jit(fn)


def test_decode_encoder_index_equals_gathered_encoder_output(tiny):
  """Projecting K/V once per input then gathering rows == projecting the gathered encoder output."""
  config, tree, _ = tiny
  ids, mask, index, targets, target_mask = _options_batch()
  model = T5(config)
  dec = shift_right(targets)
  indexed, gathered = _indexed_and_gathered(model)(tree, ids, mask, index, dec, target_mask)
  assert indexed.shape == (len(index), targets.shape[1], config.vocab_size)
  # Not always bit-identical on CPU: XLA picks its dot kernel (so its summation order) by shape,
  # and the key/value projections now run on B rows instead of R. These tiny random models amplify
  # rounding (weights ~N(0, 0.5)): measured 1.3e-6 (T5 1.0) and 2.7e-6 (T5 1.1) of the largest
  # logit; sharding the unchanged path moves them by 7.6e-6. (On T5-small the scores of the MMLU
  # benchmark came out bit-identical.)
  _assert_close_to_scale(indexed, gathered, 1e-5)
  # Not trivially equal: rows of different inputs differ with the same decoder inputs.
  a, b = model.apply(
    {"params": tree},
    model.apply({"params": tree}, ids, mask, method=T5.encode),
    mask,
    np.zeros((2, 3), np.int32),
    encoder_index=np.array([0, 1], np.int32),
    method=T5.decode,
  )
  assert float(jnp.max(jnp.abs(a - b))) > 1e-3


def test_score_with_encoded_encoder_index(tiny):
  config, tree, _ = tiny
  ids, mask, index, targets, target_mask = _options_batch(5)
  model = T5(config)
  encoded = model.apply({"params": tree}, ids, mask, method=T5.encode)
  fn = jax.jit(functools.partial(score_with_encoded, model))
  total, count = fn(tree, encoded, mask, targets, target_mask, index)
  ref_total, ref_count = fn(tree, encoded[index], mask[index], targets, target_mask)
  np.testing.assert_allclose(np.asarray(total), np.asarray(ref_total), rtol=0, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(count), np.asarray(ref_count))
  np.testing.assert_array_equal(np.asarray(count), target_mask.sum(1))
  # The same, independently: a full forward pass per (input, target) pair.
  pairs_total, _ = score_targets(model, tree, ids[index], mask[index], targets, target_mask)
  np.testing.assert_allclose(np.asarray(total), np.asarray(pairs_total), rtol=0, atol=1e-4)


def test_incremental_decode_with_encoder_index(tiny):
  """With the KV cache, the cross-attention cache holds the gathered [R, T, N, D] keys/values."""
  config, tree, _ = tiny
  ids, mask, index, targets, _ = _options_batch(7)
  model = T5(config)
  v = {"params": tree}
  encoded = model.apply(v, ids, mask, method=T5.encode)
  dec = shift_right(targets)
  full = model.apply(v, encoded[index], mask[index], dec, method=T5.decode)
  cache = None
  for step in range(3):
    variables = v if cache is None else {**v, "cache": cache}
    logits, state = model.apply(
      variables,
      encoded,
      mask,
      dec[:, step : step + 1],
      encoder_index=index,
      decode=True,
      max_decode_len=dec.shape[1],
      mutable=["cache"],
      method=T5.decode,
    )
    cache = state["cache"]
    np.testing.assert_allclose(np.asarray(logits[:, 0]), np.asarray(full[:, step]), atol=1e-4)
  cross_key = cache["decoder"]["layers_0"]["encoder_decoder_attention"]["cross_key"]
  assert cross_key.shape == (len(index), ids.shape[1], config.num_heads, config.head_dim)


def test_encoder_index_is_cross_attention_only():
  from robust_prompt.model.attention import MultiHeadAttention

  attention = MultiHeadAttention(num_heads=2, head_dim=4)
  x = jnp.ones((2, 3, 8))
  with pytest.raises(ValueError, match="cross-attention only"):
    attention.init(jax.random.PRNGKey(0), x, x, kv_index=jnp.array([0, 1]))


def test_encoder_index_sharded_on_mesh(tiny):
  """On Mesh(data=2, model=4): rows R and the index on `data`, heads on `model`; the gather then
  crosses data shards (row r may read any input), and still equals the gathered path."""
  from jax.sharding import NamedSharding, PartitionSpec

  from robust_prompt import partitioning

  if jax.device_count() < 8:
    pytest.skip("needs the 8 fake CPU devices set by conftest.py")
  config, tree, _ = tiny
  ids, mask, index, targets, target_mask = _options_batch(9)
  model = T5(config)
  dec = shift_right(targets)
  ref, _ = _indexed_and_gathered(model)(tree, ids, mask, index, dec, target_mask)

  mesh = partitioning.make_mesh(2, 4)
  params = partitioning.place_params(tree, partitioning.model_param_shardings(model, mesh))
  rows = NamedSharding(mesh, PartitionSpec("data"))
  put = lambda x: jax.device_put(np.asarray(x), rows)
  with partitioning.mesh_context(mesh):
    indexed, gathered = _indexed_and_gathered(model)(
      params, put(ids), put(mask), put(index), put(dec), put(target_mask)
    )
    indexed, gathered = jax.block_until_ready((indexed, gathered))
  _assert_close_to_scale(indexed, gathered, 1e-5)  # measured: bit-identical
  _assert_close_to_scale(indexed, ref, 3e-5)  # measured 8e-6: sharding moves the old path as much
  assert indexed.sharding.spec[0] == "data"
