"""Length bucketing, padding and batch planning (robust_prompt/batching.py)."""

import numpy as np
import pytest

from robust_prompt import batching


def test_bucket_lengths_follow_the_power_of_two_and_a_half_scheme():
  got = [batching.bucket_length(n) for n in (0, 1, 16, 17, 24, 25, 33, 49, 65, 100, 200, 300)]
  assert got == [16, 16, 16, 24, 24, 32, 48, 64, 96, 128, 256, 384]


def test_quarter_octave_buckets():
  got = [
    batching.bucket_length(n, steps_per_octave=4) for n in (1, 16, 17, 21, 33, 65, 100, 129, 200)
  ]
  assert got == [16, 16, 20, 24, 40, 80, 112, 160, 224]
  assert batching.bucket_length(1000, 1024, steps_per_octave=4) == 1024
  with pytest.raises(ValueError, match="steps_per_octave"):
    batching.bucket_length(5, steps_per_octave=3)


def test_bucket_length_is_capped_and_rounded():
  assert batching.bucket_length(300, 320) == 320
  assert batching.bucket_length(5, 320, minimum=4) == 6
  assert batching.bucket_length(3, minimum=1) == 3
  assert batching.bucket_length(17, multiple=8) == 24
  assert batching.bucket_length(10, minimum=1, multiple=4) == 12
  with pytest.raises(ValueError, match="exceeds the maximum"):
    batching.bucket_length(321, 320)
  with pytest.raises(ValueError):
    batching.bucket_length(-1)


def test_few_distinct_buckets_over_many_lengths():
  buckets = {batching.bucket_length(n, 512) for n in range(1, 513)}
  assert len(buckets) == 11  # 16 .. 512: at most a third of a row is padding
  for n in range(1, 513):
    b = batching.bucket_length(n, 512)
    assert n <= b and (b <= 16 or b <= 1.5 * n + 1)


def test_pad_batch_pads_rows_and_adds_dummy_rows():
  ids, mask = batching.pad_batch([[5, 6, 1], [7, 1]], 4, pad_id=0, batch_size=3)
  np.testing.assert_array_equal(ids, [[5, 6, 1, 0], [7, 1, 0, 0], [0, 0, 0, 0]])
  np.testing.assert_array_equal(mask, [[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
  assert ids.dtype == np.int32 and mask.dtype == np.int32
  with pytest.raises(ValueError, match="more than the padded length"):
    batching.pad_batch([[1, 2, 3]], 2)
  with pytest.raises(ValueError, match="do not fit"):
    batching.pad_batch([[1], [2]], 2, batch_size=1)


def test_plan_batches_covers_every_index_once_with_similar_lengths():
  rng = np.random.default_rng(0)
  lengths = rng.integers(1, 200, size=103)
  plan = batching.plan_batches(lengths, 8, max_len=256)
  seen = sorted(i for b in plan for i in b.indices)
  assert seen == list(range(103))
  assert all(b.size == 8 for b in plan)
  assert [b.num_real for b in plan].count(7) == 1  # 103 = 12 * 8 + 7
  for b in plan:
    assert max(lengths[list(b.indices)]) <= b.length
    np.testing.assert_array_equal(b.valid(), np.arange(8) < b.num_real)
  # Longest first (out-of-memory shows at once), and few distinct shapes.
  assert plan[0].length == max(b.length for b in plan)
  assert len({b.length for b in plan}) <= 8


def test_plan_batches_without_sorting_keeps_order():
  plan = batching.plan_batches([5, 50, 3, 7, 9], 2, sort=False)
  assert [b.indices for b in plan] == [(0, 1), (2, 3), (4,)]
  assert [b.length for b in plan] == [64, 16, 16]
  with pytest.raises(ValueError):
    batching.plan_batches([1], 0)


def test_results_scattered_by_indices_come_back_in_input_order():
  lengths = [9, 1, 30, 4, 17, 2, 60]
  plan = batching.plan_batches(lengths, 3)
  out = [None] * len(lengths)
  for b in plan:
    ids, mask = batching.pad_batch(
      [[1] * lengths[i] for i in b.indices], b.length, batch_size=b.size
    )
    per_row = mask.sum(axis=1)  # stands for a model output computed per row
    for row, index in enumerate(b.indices):
      out[index] = int(per_row[row])
  assert out == lengths


def test_pack_ragged_flattens_groups_and_splits_back():
  groups = [[[3, 1], [4, 4, 1]], [[5, 1]], [[6, 1], [7, 1], [8, 8, 8, 8, 1]]]
  packed = batching.pack_ragged(groups, minimum_pairs=4, pairs_multiple=4)
  assert packed.num_real == 6
  assert packed.ids.shape == (8, 16)  # 6 pairs -> bucket 6 -> multiple of 4
  np.testing.assert_array_equal(packed.group_index, [0, 0, 1, 2, 2, 2, 0, 0])
  np.testing.assert_array_equal(packed.item_index, [0, 1, 0, 0, 1, 2, -1, -1])
  np.testing.assert_array_equal(packed.mask.sum(axis=1), [2, 3, 2, 2, 2, 5, 0, 0])
  values = packed.mask.sum(axis=1) * 10
  assert packed.split(values, 3) == [[20, 30], [20], [20, 20, 50]]


def test_pack_ragged_common_case_is_one_shape():
  shapes = set()
  for n_groups in (4, 4, 3, 1):
    groups = [[[1] * (k + 1) for k in range(4)] for _ in range(n_groups)]
    shapes.add(batching.pack_ragged(groups, minimum_pairs=16).ids.shape)
  assert shapes == {(16, 16)}


def test_truncate_keeps_eos_like_hugging_face():
  assert batching.truncate([5, 6, 7, 1], 3) == [5, 6, 1]
  assert batching.truncate([5, 6, 7, 1], 3, keep_last=False) == [5, 6, 7]
  assert batching.truncate([5, 1], 3) == [5, 1]
  assert batching.truncate([5, 1], None) == [5, 1]


def test_secondary_length_groups_examples_within_a_bucket():
  # Four inputs in bucket 16 and four in bucket 32; targets alternate short / long.
  lengths = [10, 11, 12, 13, 20, 21, 22, 23]
  longest_target = [3, 40, 3, 40, 3, 40, 3, 40]
  plan = batching.plan_batches(lengths, 2, secondary=longest_target, longest_first=False)
  assert [b.indices for b in plan] == [(0, 2), (1, 3), (4, 6), (5, 7)]
  assert [b.length for b in plan] == [16, 16, 24, 24]
  # Without it, every batch would hold one long target (each pads its decoder rows to 40).
  plain = batching.plan_batches(lengths, 2, longest_first=False)
  assert all({longest_target[i] for i in b.indices} == {3, 40} for b in plain)
