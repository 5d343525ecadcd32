"""Loss terms of soft-prompt alignment training: pure functions returning `(loss, metrics)`.

Rows of a training batch are the members of `G` groups (one example under `K` instructions);
`group_ids: [B]` says which group each row belongs to. The losses use `group_ids` (segment sums)
rather than the row layout, so they do not depend on the order of rows, and group ids are labels
only: any int32 values work (a microbatch of the train step keeps the batch-wide ids, e.g. groups
`{1, 5}` of a batch of 8 groups). They are exact under gradient accumulation over whole groups
(every term is a mean over rows of a per-row quantity, except InfoNCE whose negatives are the
other groups of the same (micro)batch).

The objective that weights and adds these terms is `robust_prompt/train/objective.py`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from robust_prompt.model import prompted

_EPS = 1e-9


def dense_group_ids(group_ids: jax.Array) -> jax.Array:
  """Relabels `group_ids: [B]` as `0 .. n_groups - 1` (rank of each id among the distinct ids).

  Segment sums over `B` segments need ids `< B`; the ids of a microbatch are batch-wide (up to
  `G - 1`, which exceeds the microbatch's `B` as soon as there are more microbatches than
  members per group), and an out-of-range id is silently dropped by `segment_sum` and clamped
  by indexing, comparing a row with another group. Ranking makes any labels valid.
  """
  return jnp.unique(group_ids, return_inverse=True, size=group_ids.shape[0])[1].reshape(-1)


def _group_sum(values: jax.Array, dense_ids: jax.Array) -> jax.Array:
  """Sums `values: [B, ...]` per group; returns `[B, ...]` indexed by `dense_group_ids` ids."""
  return jax.ops.segment_sum(values, dense_ids, num_segments=values.shape[0])


def token_cross_entropy(log_probs: jax.Array, target_mask: jax.Array):
  """Teacher-forced cross-entropy of every row's target.

  Args:
    log_probs: `[B, S]` log-probabilities of the target tokens (`scoring.token_log_probs`).
    target_mask: `[B, S]` 1 for real target tokens (EOS included).

  Returns:
    `(loss, metrics)`: the mean over rows of each row's mean token cross-entropy (a per-row
    normalisation, so that a group's rows weigh the same whatever their target lengths).
  """
  mask = target_mask.astype(jnp.float32)
  num_tokens = jnp.maximum(mask.sum(-1), 1.0)
  per_row = -(log_probs * mask).sum(-1) / num_tokens
  loss = per_row.mean()
  return loss, {"ce": loss}


def pool(encoded: jax.Array, mask: jax.Array) -> jax.Array:
  """Masked mean over positions: `encoded [B, T, H]`, `mask [B, T]` -> `[B, H]` float32."""
  return prompted.masked_mean(encoded, mask)


def _normalize(x: jax.Array) -> jax.Array:
  return x / jnp.sqrt(jnp.maximum((x * x).sum(-1, keepdims=True), _EPS))


def cosine_alignment(reps: jax.Array, group_ids: jax.Array):
  """Cosine distance of each member's representation to its group's mean.

  Args:
    reps: `[B, H]` pooled representations.
    group_ids: `[B]` int group of each row (any labels).

  Returns:
    `(loss, metrics)`: mean over rows of `1 - cos(reps_i, mean_{j in group(i)} reps_j)`; it is 0
    when all members of every group have the same representation direction.
  """
  reps = reps.astype(jnp.float32)
  group_ids = dense_group_ids(group_ids)
  counts = _group_sum(jnp.ones_like(group_ids, jnp.float32), group_ids)
  means = _group_sum(reps, group_ids) / jnp.maximum(counts, 1.0)[:, None]
  cos = (_normalize(reps) * _normalize(means[group_ids])).sum(-1)
  loss = (1.0 - cos).mean()
  return loss, {"align": loss, "align_cos": cos.mean()}


def info_nce_alignment(reps: jax.Array, group_ids: jax.Array, temperature: float = 0.1):
  """Supervised InfoNCE: the other members of a group are positives, other groups negatives.

  For row `i`: `-mean_{p in group(i), p != i} [s_ip - logsumexp_{j != i} s_ij]` with
  `s_ij = cos(reps_i, reps_j) / temperature`, averaged over rows (rows whose group has a single
  member contribute 0).

  Args:
    reps: `[B, H]` pooled representations.
    group_ids: `[B]` int group of each row.
    temperature: `tau > 0`.
  """
  z = _normalize(reps.astype(jnp.float32))
  sims = z @ z.T / temperature  # [B, B]
  eye = jnp.eye(z.shape[0], dtype=bool)
  same = (group_ids[:, None] == group_ids[None, :]) & ~eye
  log_denom = jax.nn.logsumexp(jnp.where(eye, -jnp.inf, sims), axis=-1)  # [B]
  num_pos = same.sum(-1)
  pos_logp = jnp.where(same, sims - log_denom[:, None], 0.0).sum(-1) / jnp.maximum(num_pos, 1)
  loss = -jnp.where(num_pos > 0, pos_logp, 0.0).mean()
  pos_cos = jnp.where(same, sims * temperature, 0.0).sum() / jnp.maximum(same.sum(), 1)
  return loss, {"align": loss, "align_cos": pos_cos}


def kl_from_anchor(log_p: jax.Array, valid: jax.Array, group_ids: jax.Array, is_anchor):
  """`KL(p_anchor || p_member)` for each member, the anchor's distribution held fixed.

  Args:
    log_p: `[B, ..., C]` log-probabilities over `C` classes (answer options or vocabulary);
      the leading dimensions after `B` are positions (e.g. target tokens).
    valid: `[B, ...]` 1 where a distribution is real (e.g. a real target token).
    group_ids: `[B]` int group of each row (any labels).
    is_anchor: `[B]` 1 for the (single) anchor member of each group.

  Returns:
    `(loss, metrics)`: the mean over non-anchor rows of the mean KL over that row's valid
    positions. The anchor's distribution is `stop_gradient`-ed (it is the target).
  """
  log_p = log_p.astype(jnp.float32)
  group_ids = dense_group_ids(group_ids)
  anchor = is_anchor.astype(jnp.float32)
  extra = (1,) * (log_p.ndim - 1)
  # Pick each group's anchor distribution through a segment sum (layout-free), then broadcast.
  anchor_log_p = _group_sum(log_p * anchor.reshape(-1, *extra), group_ids)[group_ids]
  anchor_log_p = jax.lax.stop_gradient(anchor_log_p)
  p_anchor = jnp.exp(anchor_log_p)
  # 0 * log 0 terms vanish: where p_anchor is 0, its log is -inf, so mask them explicitly.
  terms = jnp.where(p_anchor > 0, p_anchor * (anchor_log_p - log_p), 0.0)
  kl = terms.sum(-1)  # [B, ...]
  valid = valid.astype(jnp.float32)
  reduce_axes = tuple(range(1, kl.ndim))
  per_row = (kl * valid).sum(reduce_axes) / jnp.maximum(valid.sum(reduce_axes), 1.0)
  members = 1.0 - anchor
  loss = (per_row * members).sum() / jnp.maximum(members.sum(), 1.0)
  return loss, {"kl": loss}


def option_log_probs(option_scores: jax.Array, option_valid: jax.Array) -> jax.Array:
  """Softmax over answer options: `option_scores [B, O]` (sum log-likelihoods) -> `[B, O]`.

  Padded options (`option_valid == 0`) get probability 0 (a large finite negative score rather
  than -inf, so that no inf - inf appears in the KL or its gradient).
  """
  scores = jnp.where(option_valid > 0, option_scores.astype(jnp.float32), -1e9)
  return jax.nn.log_softmax(scores, axis=-1)
