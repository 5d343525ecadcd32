"""Teacher-forced scoring equals PyTorch's per-example summed log-likelihood of the labels."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_tiny_hf_t5
from safetensors.numpy import load_file

from robust_prompt.checkpoints.hf_names import hf_state_dict_to_tree
from robust_prompt.model.config import T5Config
from robust_prompt.model.scoring import (
  score_targets,
  score_with_encoded,
  shift_right,
  token_log_probs,
)
from robust_prompt.model.t5 import T5

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module", params=["t5_1_0", "t5_1_1"])
def tiny(request, tmp_path_factory):
  out = make_tiny_hf_t5(tmp_path_factory.mktemp(f"score_{request.param}"), request.param, None)
  config = T5Config.from_hf_dict(json.loads((out / "config.json").read_text()))
  tree = hf_state_dict_to_tree(load_file(out / "model.safetensors"), config)
  hf = transformers.T5ForConditionalGeneration.from_pretrained(out).eval()
  return config, tree, hf


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
