"""Greedy decoding with a KV cache: identical tokens to HF `generate(do_sample=False)`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_tiny_hf_t5, make_tiny_hf_t5

from robust_prompt.model.prompted_t5 import PromptedT5
from robust_prompt.model.t5 import T5

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

MAX_LEN = 10


@pytest.fixture(scope="module", params=["t5_1_0", "t5_1_1"])
def tiny(request, tmp_path_factory):
  out = make_tiny_hf_t5(tmp_path_factory.mktemp(f"dec_{request.param}"), request.param, None)
  config, tree, _ = load_tiny_hf_t5(out)
  return config, tree, transformers.T5ForConditionalGeneration.from_pretrained(out).eval()


def greedy(config, params, ids, mask, steps, prompt=None):
  """The decoder every command runs: `PromptedT5.greedy` (jitted, as the eval step is)."""
  fn = jax.jit(lambda p, q, b: PromptedT5(config).greedy(p, q, b, steps))
  return fn(params, prompt, dict(input_ids=ids, input_mask=mask))


def _inputs(seed=0, b=4, t=9):
  rng = np.random.default_rng(seed)
  ids = rng.integers(2, 32128, size=(b, t)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[1, 5:] = 0
  ids[1, 5:] = 0
  return ids, mask


def _hf_generate(hf, ids, mask, **kw):
  with torch.no_grad():
    out = hf.generate(
      input_ids=torch.tensor(ids, dtype=torch.long),
      attention_mask=torch.tensor(mask),
      do_sample=False,
      num_beams=1,
      max_new_tokens=MAX_LEN,
      # transformers 5's encoder-decoder cache is sized by `num_layers` and breaks when the
      # decoder has more layers (as in the tiny models); recomputation gives the same tokens.
      use_cache=False,
      **kw,
    )
  return out.numpy()[:, 1:]  # drop the decoder start token


def _compare(ours, ref, pad):
  n = ref.shape[1]
  np.testing.assert_array_equal(ours[:, :n], ref)
  assert (ours[:, n:] == pad).all()  # HF stops once every row finished


def test_greedy_matches_hf_generate(tiny):
  config, tree, hf = tiny
  ids, mask = _inputs()
  ours = np.asarray(greedy(config, tree, ids, mask, MAX_LEN))
  assert ours.shape == (4, MAX_LEN) and ours.dtype == np.int32
  _compare(ours, _hf_generate(hf, ids, mask), config.pad_token_id)


def test_stops_at_eos_and_pads(tiny):
  config, tree, hf = tiny
  ids, mask = _inputs()
  free = _hf_generate(hf, ids, mask)
  # Declare a token the model emits early in row 0 to be EOS: rows must stop there.
  eos = int(free[0, 2])
  eos_config = config.replace(eos_token_id=eos)
  ours = np.asarray(greedy(eos_config, tree, ids, mask, MAX_LEN))
  first = int(np.argmax(free[0] == eos))
  assert ours[0, first] == eos and (ours[0, first + 1 :] == config.pad_token_id).all()
  ref = _hf_generate(hf, ids, mask, eos_token_id=eos, pad_token_id=config.pad_token_id)
  _compare(ours, ref, config.pad_token_id)


def test_encoded_argument_and_cache_consistency(tiny):
  config, tree, _ = tiny
  model = T5(config)
  ids, mask = _inputs(1)
  v = {"params": tree}
  encoded = model.apply(v, ids, mask, method=T5.encode)
  a = greedy(config, tree, ids, mask, MAX_LEN)
  # The decode from a precomputed context (as the objective shares it) is the same.
  pm = PromptedT5(config)
  batch = dict(input_ids=ids, input_mask=mask)
  b = pm.greedy(tree, None, batch, MAX_LEN, context=pm.context(tree, None, batch))
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  # Incremental (KV cache) logits equal teacher-forced logits at every step.
  dec = np.concatenate([np.zeros((4, 1), np.int32), np.asarray(a)[:, :-1]], axis=1)
  full = model.apply(v, encoded, mask, dec, method=T5.decode)

  @jax.jit
  def step(cache, tokens):
    variables = v if cache is None else {**v, "cache": cache}
    logits, mutated = model.apply(
      variables,
      encoded,
      mask,
      tokens,
      decode=True,
      max_decode_len=MAX_LEN,
      method=T5.decode,
      mutable=["cache"],
    )
    return logits, mutated["cache"]

  cache = None
  for i in range(4):
    logits, cache = step(cache, jnp.asarray(dec[:, i : i + 1]))
    np.testing.assert_allclose(np.asarray(logits[:, 0]), np.asarray(full[:, i]), atol=1e-4)


def test_decode_needs_max_len(tiny):
  config, tree, _ = tiny
  model = T5(config)
  ids, mask = _inputs()
  enc = model.apply({"params": tree}, ids, mask, method=T5.encode)
  with pytest.raises(ValueError, match="max_decode_len"):
    model.apply(
      {"params": tree},
      enc,
      mask,
      jnp.zeros((4, 1), jnp.int32),
      decode=True,
      method=T5.decode,
      mutable=["cache"],
    )
