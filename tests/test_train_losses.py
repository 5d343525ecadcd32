"""Loss terms: CE, cosine / InfoNCE alignment, KL from the anchor; the objective's config."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_prompt.train import losses
from robust_prompt.train.objective import LossConfig

GROUPS = jnp.asarray([0, 0, 0, 1, 1, 1], jnp.int32)
ANCHOR = jnp.asarray([1, 0, 0, 0, 1, 0], jnp.int32)


def _reps(seed=0, b=6, h=5):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(b, h)), jnp.float32)


def test_token_cross_entropy_hand_computed():
  log_probs = jnp.log(jnp.asarray([[0.5, 0.25, 0.9], [0.1, 0.9, 0.9]]))
  mask = jnp.asarray([[1, 1, 0], [1, 0, 0]])
  loss, metrics = losses.token_cross_entropy(log_probs, mask)
  expected = ((-np.log(0.5) - np.log(0.25)) / 2 + -np.log(0.1)) / 2
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  assert metrics["ce"] == loss


def test_pool_is_masked_mean():
  encoded = jnp.arange(12, dtype=jnp.float32).reshape(1, 4, 3)
  pooled = losses.pool(encoded, jnp.asarray([[1, 0, 1, 0]]))
  np.testing.assert_allclose(pooled, [[3.0, 4.0, 5.0]])


def test_cosine_alignment_zero_when_members_identical():
  per_group = _reps(1, b=2)
  reps = per_group[GROUPS] * jnp.asarray([1.0, 2.0, 0.5, 1.0, 3.0, 1.0])[:, None]  # same direction
  loss, _ = losses.cosine_alignment(reps, GROUPS)
  assert abs(float(loss)) < 1e-6
  loss, metrics = losses.cosine_alignment(_reps(), GROUPS)
  assert float(loss) > 0.05 and 0 < float(metrics["align_cos"]) < 1


@pytest.mark.parametrize("fn", ["cosine", "info_nce"])
def test_alignment_invariant_to_row_order(fn):
  reps = _reps(2)
  loss_fn = losses.cosine_alignment if fn == "cosine" else losses.info_nce_alignment
  base, _ = loss_fn(reps, GROUPS)
  for perm in ([2, 0, 1, 5, 3, 4], [3, 4, 5, 0, 1, 2], [5, 1, 3, 0, 4, 2]):
    perm = np.asarray(perm)
    # Group ids are labels: renaming them must not matter either.
    permuted, _ = loss_fn(reps[perm], (1 - GROUPS)[perm])
    np.testing.assert_allclose(permuted, base, rtol=1e-5)


def test_group_ids_are_labels_of_any_value():
  # A microbatch keeps batch-wide group ids, which can exceed its number of rows (groups 3 and
  # 7 of 8 in a 6-row microbatch): the losses must not drop or clamp them.
  labels = jnp.asarray([7, 7, 7, 3, 3, 3], jnp.int32)
  reps = _reps(6)
  for fn in (losses.cosine_alignment, losses.info_nce_alignment):
    want, want_m = fn(reps, GROUPS)
    got, got_m = fn(reps, labels)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(got_m["align_cos"], want_m["align_cos"], rtol=1e-6)
  log_p = jax.nn.log_softmax(_reps(7, h=4))
  want, _ = losses.kl_from_anchor(log_p, jnp.ones(6), GROUPS, ANCHOR)
  got, _ = losses.kl_from_anchor(log_p, jnp.ones(6), labels, ANCHOR)
  assert float(want) > 0.01
  np.testing.assert_allclose(got, want, rtol=1e-6)
  np.testing.assert_array_equal(losses.dense_group_ids(labels), [1, 1, 1, 0, 0, 0])


def test_info_nce_prefers_aligned_groups():
  centers = jnp.asarray([[1.0, 0, 0, 0, 0], [0, 1.0, 0, 0, 0]])
  aligned = centers[GROUPS] + 0.01 * _reps(3)
  scrambled = _reps(4)
  low, _ = losses.info_nce_alignment(aligned, GROUPS, temperature=0.1)
  high, _ = losses.info_nce_alignment(scrambled, GROUPS, temperature=0.1)
  assert float(low) < float(high)
  # Hand-computed for 2 orthogonal groups of 3 identical members: for each row, 2 positives at
  # s = 1/tau and 3 negatives at 0 among the 5 others.
  exact, _ = losses.info_nce_alignment(centers[GROUPS], GROUPS, temperature=0.1)
  expected = -(10.0 - np.log(2 * np.exp(10.0) + 3))
  np.testing.assert_allclose(exact, expected, rtol=1e-5)


def test_kl_zero_when_equal_and_hand_computed_otherwise():
  p = jnp.asarray([0.7, 0.2, 0.1])
  same = jnp.log(jnp.broadcast_to(p, (6, 3)))
  valid = jnp.ones((6,))
  loss, _ = losses.kl_from_anchor(same, valid, GROUPS, ANCHOR)
  assert abs(float(loss)) < 1e-7
  q = jnp.asarray([0.2, 0.5, 0.3])
  dists = jnp.stack([p, q, p, q, q, q])  # anchors: row 0 (p) and row 4 (q)
  loss, metrics = losses.kl_from_anchor(jnp.log(dists), valid, GROUPS, ANCHOR)
  kl_pq = float(np.sum(np.asarray(p) * np.log(np.asarray(p) / np.asarray(q))))
  # Members: rows 1 (KL(p||q)), 2 (0), 3 (0), 5 (0).
  np.testing.assert_allclose(loss, kl_pq / 4, rtol=1e-5)
  assert float(loss) > 0 and metrics["kl"] == loss


def test_kl_holds_the_anchor_fixed_and_masks_positions():
  logits = jnp.asarray(np.random.default_rng(5).normal(size=(6, 2, 4)), jnp.float32)
  valid = jnp.asarray([[1, 0]] * 6)

  def f(x):
    return losses.kl_from_anchor(jax.nn.log_softmax(x), valid, GROUPS, ANCHOR)[0]

  grad = jax.grad(f)(logits)
  np.testing.assert_array_equal(grad[ANCHOR.astype(bool)], 0.0)  # stop_gradient on the anchor
  np.testing.assert_array_equal(grad[:, 1], 0.0)  # invalid positions contribute nothing
  assert float(jnp.abs(grad[1, 0]).sum()) > 0


def test_option_log_probs_pads_to_zero_probability():
  scores = jnp.asarray([[-1.0, -2.0, 5.0], [-1.0, -1.0, -1.0]])
  valid = jnp.asarray([[1, 1, 0], [1, 1, 1]])
  lp = losses.option_log_probs(scores, valid)
  np.testing.assert_allclose(jnp.exp(lp).sum(-1), 1.0, rtol=1e-6)
  assert float(jnp.exp(lp[0, 2])) == 0.0
  np.testing.assert_allclose(jnp.exp(lp[0, :2]), jax.nn.softmax(jnp.asarray([-1.0, -2.0])))
  # KL over padded options stays finite (no inf - inf), gradients too.
  g = jax.grad(
    lambda s: losses.kl_from_anchor(
      losses.option_log_probs(s, valid), jnp.ones(2), jnp.zeros(2, jnp.int32), jnp.asarray([1, 0])
    )[0]
  )(scores)
  assert bool(jnp.all(jnp.isfinite(g)))


def test_loss_config_validation():
  assert LossConfig().lambda_sim == 0.0 and LossConfig().lambda_kl == 0.0  # plain prompt tuning
  with pytest.raises(ValueError, match="alignment"):
    LossConfig(alignment="l2")
  with pytest.raises(ValueError, match="temperature"):
    LossConfig(temperature=0.0)
  with pytest.raises(ValueError, match=">= 0"):
    LossConfig(lambda_sim=-1.0)
