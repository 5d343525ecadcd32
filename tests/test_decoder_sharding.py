"""The decoder-only family on 8 (fake CPU) devices equals one device: data=2 x model=4, data=8."""

import jax
import numpy as np
import pytest
from test_decoder_common import VOCAB_SIZE, make_hf_model

from robust_prompt import multihost, partitioning
from robust_prompt.checkpoints import hf_decoder
from robust_prompt.model.prompted_decoder import PromptedDecoder

B, T, NUM_OPTIONS, S = 8, 12, 3, 4


@pytest.fixture(scope="module")
def setups(tmp_path_factory):
  """kind -> (model, params, batch, prompt, single-device outputs), built once per kind."""
  cache = {}

  def get(kind):
    if kind not in cache:
      cache[kind] = _setup(kind, tmp_path_factory.mktemp(f"shard_{kind}"))
    return cache[kind]

  return get


def _setup(kind, out):
  make_hf_model(out, kind, seed=3)
  config, params, _ = hf_decoder.load_hf_decoder(out)
  rng = np.random.RandomState(0)
  lengths = rng.randint(3, T + 1, B)
  ids = rng.randint(5, VOCAB_SIZE, (B, T)).astype(np.int32)
  mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.int32)
  if config.bos_token_id is not None:
    ids[:, 0] = config.bos_token_id
  option_ids = rng.randint(5, VOCAB_SIZE, (B, NUM_OPTIONS, S)).astype(np.int32)
  option_lengths = rng.randint(0, S + 1, (B, NUM_OPTIONS))
  option_lengths[:, 0] = np.maximum(option_lengths[:, 0], 1)
  option_mask = (np.arange(S)[None, None, :] < option_lengths[..., None]).astype(np.int32)
  batch = dict(
    input_ids=ids,
    input_mask=mask,
    option_ids=option_ids,
    option_mask=option_mask,
    target_ids=option_ids[:, 0],
    target_mask=option_mask[:, 0],
    target_index=np.array([0, 0, 1, 3, 3, 5, 6, 7], np.int32),
  )
  prompt = rng.normal(0, 0.5, (2, config.d_model)).astype(np.float32)
  model = PromptedDecoder(config)
  want = jax.device_get(_outputs(model, params, prompt, batch))  # one device
  return model, params, batch, prompt, want


def _outputs(model, params, prompt, batch):
  def run(p, prompt_, b):
    ctx = model.context(p, prompt_, b)
    sums, counts = model.target_scores(p, prompt_, b, context=ctx)
    return dict(
      scores=model.option_log_probs(p, prompt_, b, context=ctx),
      greedy_prefix=model.option_log_probs(p, prompt_, b, mode="greedy_prefix", context=ctx),
      tokens=model.greedy(p, prompt_, b, 6, context=ctx),
      sums=sums,
      counts=counts,
      logits=model.logits(p, prompt_, b, context=ctx),
      represent=model.represent(p, prompt_, b, context=ctx),
    )

  return jax.jit(run)(params, prompt, batch)


# Model parallelism for both architectures (Qwen2: 2 key/value heads on a model axis of 4, biases,
# tied output layer); pure data parallelism does not depend on the architecture.
@pytest.mark.parametrize(
  "kind,data,model_axis", [("llama", 2, 4), ("qwen2", 2, 4), ("llama", 8, 1)]
)
def test_sharded_equals_single_device(setups, kind, data, model_axis):
  model, params, batch, prompt, want = setups(kind)
  mesh = partitioning.make_mesh(data, model_axis)
  shardings = partitioning.model_param_shardings(model.module, mesh)
  placed = partitioning.place_params(params, shardings)
  if model_axis > 1:  # really split: the MLP's inner width over `model`
    kernel = placed["layers_0"]["mlp"]["wi_1"]["kernel"]
    assert kernel.addressable_shards[0].data.shape[1] == kernel.shape[1] // model_axis
  with partitioning.mesh_context(mesh):
    got = _outputs(
      model,
      placed,
      multihost.place_replicated(prompt, mesh),
      multihost.place_batch(batch, mesh),
    )
  got = jax.device_get(got)
  np.testing.assert_array_equal(got["tokens"], want["tokens"])
  np.testing.assert_array_equal(got["counts"], want["counts"])
  for name in ("scores", "greedy_prefix", "sums", "logits", "represent"):
    finite = np.isfinite(want[name])
    np.testing.assert_array_equal(np.isfinite(got[name]), finite, err_msg=name)
    np.testing.assert_allclose(got[name][finite], want[name][finite], atol=1e-4, err_msg=name)
