"""Length bucketing for jit: a handful of static shapes instead of one compilation per batch.

`jax.jit` compiles once per input shape. Padding every batch to the longest sequence of the
dataset wastes compute; padding each batch to its own longest sequence recompiles nearly every
batch. The middle way used here (as in T5X's inference and MaxText's packing-free eval):

* sort examples by length, so that a batch holds sequences of similar length;
* pad each batch to a *bucket* length: 16, 24, 32, 48, 64, 96, ... (powers of two and 1.5 times
  powers of two, so at most a third of a row is padding), capped at the maximum length;
* keep the batch size fixed, filling the last batch with dummy rows (all padding, mask 0), and keep
  each row's original index so that results are written back in input order.

Ragged groups (an input with several targets, e.g. the options of a multiple-choice question) are
flattened into (group, item) pairs by `pack_ragged`, whose pair count is bucketed as well.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

DEFAULT_MIN_BUCKET = 16
# What one more compiled shape is worth, in padded token slots (rows x positions), when choosing
# lengths to merge (`merged_lengths`): about what a compilation of T5-small costs on a 2-core CPU
# (eval: ~0.6 s of its forward work; training: a few steps). `benchmarks/eval_throughput.py
# --shape_cost_slots` and `train_throughput.py --length_grouped` measure the trade.
DEFAULT_SHAPE_COST_SLOTS = 4096


def bucket_length(
  n: int,
  max_len: int | None = None,
  *,
  minimum: int = DEFAULT_MIN_BUCKET,
  multiple: int = 1,
  steps_per_octave: int = 2,
) -> int:
  """The smallest bucket that holds `n`: `minimum`, then 2^k and 1.5 * 2^k, capped at `max_len`.

  With `steps_per_octave=4` the buckets between 2^k and 2^(k+1) are 2^k * (1, 1.25, 1.5, 1.75)
  (at most a fifth of a row is padding, for twice the shapes): for long runs of one shape, such
  as an evaluation, where compiling a few more shapes is cheaper than the padding.

  Args:
    n: the length (or count) to hold.
    max_len: the largest allowed bucket (the model's maximum length); None for no cap.
    minimum: the smallest bucket.
    multiple: buckets are rounded up to a multiple of this (e.g. the size of the mesh's data axis,
      so that a padded batch splits evenly over the devices); the cap is applied before rounding.

  Raises:
    ValueError: if `n > max_len` (callers truncate sequences first).
  """
  if n < 0:
    raise ValueError(f"length must be >= 0, got {n}")
  if max_len is not None and n > max_len:
    raise ValueError(f"length {n} exceeds the maximum {max_len}; truncate before bucketing")
  if steps_per_octave not in (2, 4):
    raise ValueError(f"steps_per_octave must be 2 or 4, got {steps_per_octave}")
  bucket = max(int(minimum), 1)
  while bucket < n:
    if steps_per_octave == 2:
      # 16 -> 24 -> 32 -> 48 -> 64: alternate 1.5x and 4/3x steps (2^k, 1.5 * 2^k).
      step = bucket // 2 if (bucket & (bucket - 1)) == 0 else bucket // 3
    else:
      # 16 -> 20 -> 24 -> 28 -> 32 -> 40: a quarter of the octave's lower power of two.
      step = (1 << (bucket.bit_length() - 1)) // 4
    bucket += max(step, 1)
  if max_len is not None:
    bucket = min(bucket, max_len)
  return int(math.ceil(bucket / multiple) * multiple)


def pad_batch(
  seqs: Sequence[Sequence[int]],
  length: int,
  *,
  pad_id: int = 0,
  batch_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Pads token sequences on the right into a fixed-shape batch.

  Args:
    seqs: token id lists, each at most `length` long.
    length: the padded length (a bucket).
    pad_id: the id written into padding positions.
    batch_size: the static number of rows; rows past `len(seqs)` are dummy rows (all `pad_id`,
      mask 0) whose results the caller discards. Defaults to `len(seqs)`.

  Returns:
    ids: [B, length] int32, and mask: [B, length] int32 (1 on real tokens).
  """
  rows = len(seqs) if batch_size is None else batch_size
  if len(seqs) > rows:
    raise ValueError(f"{len(seqs)} sequences do not fit in a batch of {rows}")
  ids = np.full((rows, length), pad_id, dtype=np.int32)
  mask = np.zeros((rows, length), dtype=np.int32)
  for i, seq in enumerate(seqs):
    if len(seq) > length:
      raise ValueError(f"sequence {i} has {len(seq)} tokens, more than the padded length {length}")
    ids[i, : len(seq)] = seq
    mask[i, : len(seq)] = 1
  return ids, mask


@dataclasses.dataclass(frozen=True)
class Batch:
  """One planned batch: which examples go in it, and its static shape.

  Attributes:
    indices: the original positions of the real rows, in row order.
    length: the bucketed (padded) sequence length of the batch.
    size: the static number of rows, `>= len(indices)`; the rest are dummy rows.
  """

  indices: tuple[int, ...]
  length: int
  size: int

  @property
  def num_real(self) -> int:
    return len(self.indices)

  def valid(self) -> np.ndarray:
    """[size] bool: True on real rows, False on dummy rows."""
    return np.arange(self.size) < self.num_real


def plan_batches(
  lengths: Sequence[int],
  batch_size: int,
  *,
  max_len: int | None = None,
  minimum: int = DEFAULT_MIN_BUCKET,
  sort: bool = True,
  longest_first: bool = True,
  secondary: Sequence[int] | None = None,
  steps_per_octave: int = 2,
) -> list[Batch]:
  """Groups examples into fixed-size batches of similar length, each with a bucketed length.

  Args:
    lengths: the length of each example (e.g. input tokens, already truncated to `max_len`).
    batch_size: the static number of rows of every batch.
    max_len: the cap of the length buckets.
    minimum: the smallest length bucket.
    sort: group examples of similar length (False keeps input order, e.g. for training).
    longest_first: run the longest batches first, so that running out of memory happens at once
      rather than at the end of a long run.
    secondary: a second length per example (e.g. its longest target) that orders examples within
      a length bucket. The bucket, not the exact length, then fixes the padded length, so grouping
      by the secondary length cuts the padding of whatever it measures (e.g. decoder rows) for free.
    steps_per_octave: length buckets per doubling (`bucket_length`).

  Returns:
    Batches covering every index exactly once; scatter results back with `Batch.indices`.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  lengths = np.asarray(lengths, dtype=np.int64)
  if not sort:
    order = np.arange(len(lengths))
  elif secondary is None:
    order = np.argsort(lengths, kind="stable")
  else:
    buckets = [
      bucket_length(int(n), max_len, minimum=minimum, steps_per_octave=steps_per_octave)
      for n in lengths
    ]
    order = np.lexsort((lengths, np.asarray(secondary), buckets))
  batches = []
  for start in range(0, len(order), batch_size):
    chunk = order[start : start + batch_size]
    longest = int(lengths[chunk].max())
    batches.append(
      Batch(
        indices=tuple(int(i) for i in chunk),
        length=bucket_length(longest, max_len, minimum=minimum, steps_per_octave=steps_per_octave),
        size=batch_size,
      )
    )
  if sort and longest_first:
    batches.reverse()
  return batches


def merged_lengths(rows_at: dict[int, int], shape_cost: float) -> dict[int, int]:
  """Which length each length pads to, where one more compiled shape costs `shape_cost` slots.

  Every distinct length is one more compiled program. With `shape_cost` in padded token slots
  (rows x positions) per shape, this chooses the subset of the lengths that minimises
  `slots of all rows + shape_cost x lengths kept`; each length pads to the smallest kept length
  that holds it (the longest is always kept). An exact dynamic programme over the sorted distinct
  lengths (m of them, O(m^2)).

  Args:
    rows_at: `{length: rows at that length}`.
    shape_cost: padded token slots one more shape is worth; <= 0 keeps every length.

  Returns:
    `{length: the kept length it pads to}` for every key of `rows_at`.
  """
  lengths = sorted(rows_at)
  if shape_cost <= 0 or len(lengths) < 2:
    return {n: n for n in lengths}
  # best[k]: the cheapest cost of lengths[:k] with lengths[k - 1] kept; cut[k]: the kept length
  # before it (index into best).
  best, cut = [0.0] + [math.inf] * len(lengths), [0] * (len(lengths) + 1)
  for k in range(1, len(lengths) + 1):
    rows = 0
    for i in range(k - 1, -1, -1):
      rows += rows_at[lengths[i]]
      cost = best[i] + shape_cost + rows * lengths[k - 1]
      if cost < best[k]:
        best[k], cut[k] = cost, i
  chosen, k = {}, len(lengths)
  while k > 0:
    for n in lengths[cut[k] : k]:
      chosen[n] = lengths[k - 1]
    k = cut[k]
  return chosen


def merge_lengths(batches: Sequence[Batch], shape_cost: float) -> list[Batch]:
  """Pads some batches further, to lengths other batches have, where a shape costs more
  (`merged_lengths` over the batches' lengths and sizes). `shape_cost=0` returns the batches
  unchanged; composition and order never change."""
  rows_at: dict[int, int] = {}
  for b in batches:
    rows_at[b.length] = rows_at.get(b.length, 0) + b.size
  chosen = merged_lengths(rows_at, shape_cost)
  return [
    b if chosen[b.length] == b.length else dataclasses.replace(b, length=chosen[b.length])
    for b in batches
  ]


@dataclasses.dataclass(frozen=True)
class RaggedBatch:
  """Items of ragged groups flattened into one padded batch of (group, item) pairs.

  Attributes:
    ids: [R, S] int32 padded item tokens (R pairs, bucketed; S a length bucket).
    mask: [R, S] int32, 1 on real tokens; dummy pairs are all zero.
    group_index: [R] int32, the group (row of the enclosing batch) each pair belongs to; dummy
      pairs point at group 0 so that gathers along it stay in range.
    item_index: [R] int32, the position of the item within its group (-1 on dummy pairs).
    num_real: the number of real pairs (they come first).
  """

  ids: np.ndarray
  mask: np.ndarray
  group_index: np.ndarray
  item_index: np.ndarray
  num_real: int

  def split(self, values: np.ndarray, num_groups: int) -> list[list]:
    """Regroups per-pair `values` [R, ...] into `num_groups` lists (item order kept)."""
    out: list[list] = [[] for _ in range(num_groups)]
    for r in range(self.num_real):
      out[int(self.group_index[r])].append(values[r])
    return out


def pack_ragged(
  groups: Sequence[Sequence[Sequence[int]]],
  *,
  max_len: int | None = None,
  pad_id: int = 0,
  minimum_length: int = DEFAULT_MIN_BUCKET,
  minimum_pairs: int = 1,
  pairs_multiple: int = 1,
) -> RaggedBatch:
  """Flattens the items of each group (e.g. the targets of each input) into a bucketed batch.

  The pair count is bucketed like lengths (with `minimum_pairs` as the smallest bucket and rounded
  to `pairs_multiple`), so that batches of groups with similar item counts share one shape.

  Args:
    groups: `groups[g][k]` is the token list of item k of group g.
    max_len: the cap of the length buckets (items must already be truncated to it).
    pad_id: the id written into padding positions.
    minimum_length: the smallest length bucket.
    minimum_pairs: the smallest pair-count bucket (e.g. the batch size times the usual number of
      items, so that the common case compiles once).
    pairs_multiple: the pair count is a multiple of this (e.g. the data-parallel device count).
  """
  flat = [(g, k, item) for g, items in enumerate(groups) for k, item in enumerate(items)]
  num_pairs = bucket_length(len(flat), minimum=minimum_pairs, multiple=pairs_multiple)
  longest = max((len(item) for _, _, item in flat), default=1)
  length = bucket_length(longest, max_len, minimum=minimum_length)
  ids, mask = pad_batch([item for _, _, item in flat], length, pad_id=pad_id, batch_size=num_pairs)
  group_index = np.zeros((num_pairs,), dtype=np.int32)
  item_index = np.full((num_pairs,), -1, dtype=np.int32)
  for r, (g, k, _) in enumerate(flat):
    group_index[r] = g
    item_index[r] = k
  return RaggedBatch(ids, mask, group_index, item_index, num_real=len(flat))


def truncate(seq: Sequence[int], max_len: int | None, *, keep_last: bool = True) -> list[int]:
  """Cuts `seq` to `max_len` tokens, keeping its last token (EOS) as Hugging Face truncation does."""
  seq = list(seq)
  if max_len is None or len(seq) <= max_len:
    return seq
  if keep_last and max_len > 0:
    return seq[: max_len - 1] + seq[-1:]
  return seq[:max_len]
