"""The shared-prefix context pass: a batch's common leading tokens run once, results unchanged.

`PromptedDecoder.with_shared_prefix` (host) picks the prefix; `context` runs it at batch 1 and the
rows' own tokens after it. Every output (options in every mode, representations, greedy tokens,
target scores, logits) must equal the plain pass, with and without a soft prompt, on one device
and sharded, and equal PyTorch's.
"""

import dataclasses
import functools

import jax
import numpy as np
import pytest
from test_decoder_common import VOCAB_SIZE, hf_continuation_log_prob, make_hf_model

from robust_prompt import multihost, partitioning
from robust_prompt.checkpoints import hf_decoder
from robust_prompt.model import prompted
from robust_prompt.model.prompted_decoder import PromptedDecoder

TOL = 1e-5  # float32, the same computation split differently
T, S, NUM_OPTIONS, STEPS = 24, 4, 3, 5
BUCKETS = (4, 8, 16)  # small, for small inputs (the default: 16, 24, 32, ...)
# The device-side tests below use one batch size and one soft-prompt length, so that their plain
# and single-device passes are the same shapes and compile once (see `_jitted_outputs`).
ROWS, PROMPT_LENGTH = 8, 4


@pytest.fixture(scope="module", params=["llama", "qwen2"])  # with a BOS, and without
def loaded(request, tmp_path_factory):
  """(kind, PyTorch model, DecoderConfig, params)."""
  out = tmp_path_factory.mktemp(f"prefix_{request.param}")
  torch_model = make_hf_model(out, request.param, seed=4)
  config, params, _ = hf_decoder.load_hf_decoder(out)
  return request.param, torch_model, config, params


def _rows(config, shared: int, lengths, seed=0):
  """Token rows: BOS (if any), `shared` common tokens, then each row's own (lengths = totals)."""
  rng = np.random.RandomState(seed)
  head = [config.bos_token_id] if config.bos_token_id is not None else []
  common = [int(t) for t in rng.randint(5, VOCAB_SIZE, shared)]
  return [
    head + common + [int(t) for t in rng.randint(5, VOCAB_SIZE, n - len(head) - shared)]
    for n in lengths
  ]


def _batch(rows, num_rows):
  """Right-padded `[num_rows, T]` inputs (rows past `rows` are dummies) with random options."""
  ids = np.zeros((num_rows, T), np.int32)
  mask = np.zeros((num_rows, T), np.int32)
  for r, row in enumerate(rows):
    ids[r, : len(row)] = row
    mask[r, : len(row)] = 1
  rng = np.random.RandomState(1)
  option_ids = rng.randint(5, VOCAB_SIZE, (num_rows, NUM_OPTIONS, S)).astype(np.int32)
  lengths = rng.randint(0, S + 1, (num_rows, NUM_OPTIONS))
  lengths[:, 0] = np.maximum(lengths[:, 0], 1)
  option_mask = (np.arange(S)[None, None] < lengths[..., None]).astype(np.int32)
  # Target r continues another (real) row.
  index = (np.arange(num_rows, dtype=np.int32)[::-1] % len(rows)).astype(np.int32)
  return dict(
    input_ids=ids,
    input_mask=mask,
    option_ids=option_ids,
    option_mask=option_mask,
    target_ids=option_ids[:, 0],
    target_mask=option_mask[:, 0],
    target_index=index,
  )


@functools.cache
def _jitted_outputs(model):
  """One jitted function per model (cached): tests that run the same shapes on the same model
  share its compiled programs, which dominate this file's run time."""

  def run(p, prompt_, b):
    ctx = model.context(p, prompt_, b)
    sums, counts = model.target_scores(p, prompt_, b, context=ctx)
    out = dict(
      sums=sums,
      counts=counts,
      tokens=model.greedy(p, prompt_, b, STEPS, context=ctx),
      logits=model.logits(p, prompt_, b, context=ctx),
      ctx_lengths=ctx.lengths,
      ctx_last=ctx.last,
    )
    for mode in prompted.SCORE_MODES:
      out[mode] = model.option_log_probs(p, prompt_, b, mode=mode, context=ctx)
    for pooling in prompted.POOLINGS:
      if pooling != "prompt" or prompt_ is not None:
        out[pooling] = model.represent(p, prompt_, b, pooling=pooling, context=ctx)
    return out

  return jax.jit(run)


def _outputs(model, params, prompt, batch):
  return jax.device_get(jax.block_until_ready(_jitted_outputs(model)(params, prompt, batch)))


def _assert_same(got, want, real, msg="", atol=TOL):
  """Equal on the real rows (dummy rows, all padding, are garbage either way)."""
  for name, value in want.items():
    if name in ("sums", "counts"):  # per target, each of a real row
      g, w = got[name], value
    else:
      g, w = got[name][real], value[real]
    if name in ("tokens", "counts", "ctx_lengths", "ctx_last"):
      np.testing.assert_array_equal(g, w, err_msg=f"{msg} {name}")
      continue
    finite = np.isfinite(w)
    np.testing.assert_array_equal(np.isfinite(g), finite, err_msg=f"{msg} {name}")
    np.testing.assert_allclose(g[finite], w[finite], atol=atol, rtol=0, err_msg=f"{msg} {name}")


# -- host side: which prefix ------------------------------------------------------------------


def test_shared_prefix_length_rules(loaded):
  _, _, config, _ = loaded
  model = PromptedDecoder(config, shared_prefix_buckets=BUCKETS)
  head = 1 if config.bos_token_id is not None else 0

  def length(rows, num_rows=None):
    b = _batch(rows, num_rows or len(rows))
    return model.shared_prefix_length(b["input_ids"], b["input_mask"])

  # 11 shared tokens (12 with BOS) -> rounded down to 8; rows of different lengths.
  assert length(_rows(config, 11, (20, 15, 24))) == 8
  # Dummy rows (all padding) do not count; nor does a single real row have anything to share
  # beyond its last token.
  assert length(_rows(config, 11, (20, 15)), num_rows=4) == 8
  assert length(_rows(config, 3, (20,)), num_rows=2) == 16  # 19 shareable: every row keeps one
  # Each row keeps >= 1 own token: a row that is all prefix limits it to its length - 1.
  rows = _rows(config, 16, (24, 24))
  rows.append(rows[0][:9])
  assert length(rows) == 8
  # Below the smallest bucket (only BOS, or a few tokens, in common): the path is not taken.
  assert length(_rows(config, 3 - head, (20, 18))) == 0
  mixed = _rows(config, 0, (20, 18, 22), seed=3)
  assert length(mixed) == 0
  # Left padding (real tokens not at the front) is never shared.
  b = _batch(_rows(config, 11, (20, 15)), 2)
  b["input_ids"] = np.roll(b["input_ids"], 2, axis=1)
  b["input_mask"] = np.roll(b["input_mask"], 2, axis=1)
  assert model.shared_prefix_length(b["input_ids"], b["input_mask"]) == 0
  # A soft prompt at least the smallest bucket long: the first token (BOS) alone is shared.
  first_only = _rows(config, 1 - head, (20, 18))
  assert length(first_only) == 0
  b = _batch(first_only, 2)
  assert model.shared_prefix_length(b["input_ids"], b["input_mask"], prompt_length=4) == 1
  assert model.shared_prefix_length(b["input_ids"], b["input_mask"], prompt_length=3) == 0
  b = _batch(_rows(config, 11, (20, 15)), 2)
  assert model.shared_prefix_length(b["input_ids"], b["input_mask"], prompt_length=4) == 8
  # Too small a share of the row's positions to be worth a compiled program: not taken.
  fussy = dataclasses.replace(model, min_shared_fraction=(8 + 1) / T)
  assert fussy.shared_prefix_length(b["input_ids"], b["input_mask"]) == 0
  assert fussy.shared_prefix_length(b["input_ids"], b["input_mask"], prompt_length=4) == 8
  # Off.
  off = dataclasses.replace(model, shared_prefix_buckets=())
  b = _batch(_rows(config, 11, (20, 15)), 2)
  assert off.shared_prefix_length(b["input_ids"], b["input_mask"]) == 0
  assert off.with_shared_prefix(b) is b


def test_with_shared_prefix_adds_the_rows(loaded):
  _, _, config, _ = loaded
  model = PromptedDecoder(config, shared_prefix_buckets=BUCKETS)
  rows = _rows(config, 11, (20, 15, 24))
  b = _batch(rows, 4)
  out = model.with_shared_prefix(b)
  assert out["prefix_ids"].shape == (4, 8) and out["prefix_ids"].dtype == np.int32
  np.testing.assert_array_equal(out["prefix_ids"], np.tile(np.asarray(rows[0][:8]), (4, 1)))
  assert out.keys() - {"prefix_ids"} == b.keys() and all(out[k] is b[k] for k in b)
  assert model.with_shared_prefix(_batch(_rows(config, 0, (20, 18), seed=3), 2)).keys() == b.keys()


def test_t5_family_ignores_it():
  from robust_prompt.model.config import T5Config

  model = prompted.for_config(T5Config())
  batch = dict(input_ids=np.ones((2, 20), np.int32), input_mask=np.ones((2, 20), np.int32))
  assert model.with_shared_prefix(batch) is batch


def test_train_batches_share_nothing(loaded):
  """Paraphrased instructions in one batch share at most BOS: the training pass stays plain."""
  _, _, config, _ = loaded
  model = PromptedDecoder(config)  # the default buckets (16, 24, 32, ...)
  paraphrases = _rows(config, 0, (20, 18, 24, 22), seed=5)
  b = _batch(paraphrases, 4)
  assert model.shared_prefix_length(b["input_ids"], b["input_mask"]) == 0
  assert model.with_shared_prefix(b) is b


# -- device side: the same results --------------------------------------------------------------


@pytest.mark.parametrize("with_prompt", [False, True])
def test_prefix_pass_equals_plain_pass(loaded, with_prompt):
  _, _, config, params = loaded
  model = PromptedDecoder(config, shared_prefix_buckets=BUCKETS)
  prompt = None
  if with_prompt:
    prompt = np.random.RandomState(2).normal(0, 0.5, (PROMPT_LENGTH, config.d_model))
    prompt = prompt.astype(np.float32)
  # Rows of different lengths sharing 11 tokens (+ BOS), a row with one own token after the 8
  # shared ones, and dummy rows.
  rows = _rows(config, 11, (20, 13, 24, 24))
  rows[3] = rows[0][:9]
  batch = _batch(rows, ROWS)
  shared = model.with_shared_prefix(batch)
  assert shared["prefix_ids"].shape == (ROWS, 8)
  want = _outputs(model, params, prompt, batch)
  got = _outputs(model, params, prompt, shared)
  real = np.arange(ROWS) < 4
  _assert_same(got, want, real)
  # The comparison is between informative numbers: scores differ between rows and options.
  assert np.ptp(want["sum"][real][np.isfinite(want["sum"][real])]) > 1.0


def test_first_token_and_prompt_shared(loaded):
  """Rows sharing only their first token (BOS) with a soft prompt: BOS + prompt run once."""
  _, _, config, params = loaded
  model = PromptedDecoder(config, shared_prefix_buckets=BUCKETS)
  prompt = np.random.RandomState(4).normal(0, 0.5, (PROMPT_LENGTH, config.d_model))
  prompt = prompt.astype(np.float32)
  head = 1 if config.bos_token_id is not None else 0
  batch = _batch(_rows(config, 1 - head, (20, 13, 24), seed=6), ROWS)
  shared = model.with_shared_prefix(batch, prompt_length=PROMPT_LENGTH)
  assert PROMPT_LENGTH == BUCKETS[0] and shared["prefix_ids"].shape == (ROWS, 1)
  want = _outputs(model, params, prompt, batch)
  _assert_same(_outputs(model, params, prompt, shared), want, np.arange(ROWS) < 3)


def test_path_not_taken_below_the_buckets(loaded):
  """Rows sharing fewer tokens than the smallest bucket run the plain pass (no `prefix_ids`)."""
  _, _, config, params = loaded
  model = PromptedDecoder(config, shared_prefix_buckets=BUCKETS)
  batch = _batch(_rows(config, 2, (20, 13, 24)), 3)
  assert model.with_shared_prefix(batch) is batch


def test_prefix_pass_matches_pytorch(loaded):
  kind, torch_model, config, params = loaded
  model = PromptedDecoder(config, shared_prefix_buckets=BUCKETS)
  rows = _rows(config, 17, (22, 19, 24), seed=7)
  batch = model.with_shared_prefix(_batch(rows, 3))
  assert batch["prefix_ids"].shape[1] == 16
  scores = np.asarray(jax.jit(lambda p, b: model.option_log_probs(p, None, b))(params, batch))
  for r, row in enumerate(rows):
    for o in range(NUM_OPTIONS):
      opt = batch["option_ids"][r, o][batch["option_mask"][r, o] > 0].tolist()
      if not opt:
        assert scores[r, o] == -np.inf
        continue
      want = hf_continuation_log_prob(torch_model, row, opt)
      assert abs(scores[r, o] - want) <= 1e-4, (kind, r, o, scores[r, o], want)


# Llama on data=2 x model=4 in the default run; data=8 (the other layout) and Qwen2 with -m slow:
# Qwen2's model-parallel pass (2 KV heads over 4, biases) is tests/test_decoder_sharding.py's, its
# prefix path the single-device tests' above.
@pytest.mark.parametrize(
  "sharded_kind,data,model_axis",
  [
    ("llama", 2, 4),
    pytest.param("qwen2", 2, 4, marks=pytest.mark.slow),
    pytest.param("llama", 8, 1, marks=pytest.mark.slow),
  ],
)
def test_sharded_prefix_pass_equals_single_device(loaded, sharded_kind, data, model_axis):
  kind, _, config, params = loaded
  if kind != sharded_kind:
    pytest.skip(f"the {sharded_kind} case")
  model = PromptedDecoder(config, shared_prefix_buckets=BUCKETS)
  prompt = np.random.RandomState(3).normal(0, 0.5, (PROMPT_LENGTH, config.d_model))
  prompt = prompt.astype(np.float32)
  rows = _rows(config, 11, (20, 13, 24, 17, 22, 14, 21))
  batch = model.with_shared_prefix(_batch(rows, ROWS))  # 7 real rows and a dummy
  assert batch["prefix_ids"].shape == (ROWS, 8)
  want = _outputs(model, params, prompt, batch)
  plain = _outputs(model, params, prompt, {k: v for k, v in batch.items() if k != "prefix_ids"})
  mesh = partitioning.make_mesh(data, model_axis)
  placed = partitioning.place_params(params, partitioning.model_param_shardings(model.module, mesh))
  with partitioning.mesh_context(mesh):
    got = _outputs(
      model, placed, multihost.place_replicated(prompt, mesh), multihost.place_batch(batch, mesh)
    )
  real = np.arange(8) < 7
  # As tests/test_decoder_sharding.py: model parallelism reorders sums.
  _assert_same(got, want, np.ones(8, bool), "sharded", atol=1e-4)
  _assert_same(got, plain, real, "sharded vs plain", atol=1e-4)


# -- through the eval engine ---------------------------------------------------------------------


def test_evaluator_results_unchanged(tmp_path):
  """`Evaluator` on a tiny task: the same rows with the path on (taken) and off."""
  from test_decoder_common import make_bpe_tokenizer

  from robust_prompt.checkpoints.resolve import load_model
  from robust_prompt.data.example import Example
  from robust_prompt.eval import engine
  from robust_prompt.instructions.schema import Instruction

  make_bpe_tokenizer(tmp_path)
  make_hf_model(tmp_path, "llama", seed=5)
  loaded = load_model(str(tmp_path))
  common = dict(options_format="none", answer_space="option_text", split="unobserved",
                source="human", tasks=("jsonl:*",))  # fmt: skip
  instructions = [
    Instruction(
      id="long", template="Read the question and answer it with one option. {input}", **common
    ),  # fmt: skip
    Instruction(id="bare", template="{input}", **common),
  ]
  rng = np.random.RandomState(0)
  words = "the quick brown fox jumps over lazy dog hello world yes no maybe".split()
  examples = [
    Example(id=str(i), task="jsonl:toy", fields={"input": " ".join(rng.choice(words, n))},
            options=("yes", "no", "maybe")[: 2 + i % 2], answer=0, correct=(0,))
    for i, n in enumerate(rng.randint(2, 9, 12))
  ]  # fmt: skip
  examples.append(Example(id="gen", task="jsonl:toy", fields={"input": "hello"}, targets=("x",)))
  chunks = engine.plan_chunks({"jsonl:toy": examples}, instructions)
  prompt = rng.normal(0, 0.5, (2, loaded.config.d_model)).astype(np.float32)
  results, shapes = {}, {}
  for on in (True, False):
    for p in (None, prompt):
      model = prompted.for_config(loaded.config, shared_prefix_buckets=(16,) if on else ())
      settings = engine.evaluate_settings(batch_size=4, max_decode_length=4)
      evaluator = engine.Evaluator(model, loaded.params, loaded.vocab, settings, prompt=p)
      results[on, p is None] = evaluator.score_chunks(chunks, "m")
      shapes[on, p is None] = evaluator.shapes
  # The path was taken (a T_s in some shapes) where on, in both the options and generate steps.
  taken = {s[0] for s in shapes[True, True] if len(s) == {"options": 6, "generate": 4}[s[0]]}
  assert taken == {"options", "generate"}, shapes[True, True]
  assert all(len(s) == {"options": 5, "generate": 3}[s[0]] for s in shapes[False, True])
  for p in (True, False):
    on, off = results[True, p], results[False, p]
    for chunk_on, chunk_off in zip(on, off):
      for a, b in zip(chunk_on, chunk_off):
        assert a["prediction"] == b["prediction"], (a["example_id"], p)
        np.testing.assert_allclose(a["option_scores"], b["option_scores"], atol=TOL, rtol=0)
  assert results[True, True] != results[True, False]  # the prompt changes the scores
