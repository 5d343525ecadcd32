"""Eval throughput on one GPU: ours (JAX) vs Hugging Face PyTorch, Flan-T5-XL and Llama-3-8B shapes.

The device command. Step 1 runs HERE (a machine with seqio and ../shared): the GPU image has
neither seqio/TensorFlow nor ../shared, so MMLU is rendered and tokenized here and only token ids
travel. Step 2 runs on the GPU machine (the `run` tool with `carry: ["outputs/gpu_eval"]`,
`timeout_s: 600`):

  python benchmarks/gpu_eval.py --prepare --inputs outputs/gpu_eval
  set -o pipefail; PYTHONUNBUFFERED=1 python3 benchmarks/gpu_eval.py --inputs outputs/gpu_eval \
    --json $OUT/gpu_eval.json 2>&1 | tee $OUT/gpu_eval.log

`outputs/` is git-ignored. Step 2 should take about 5 minutes (estimates below); past
`--time_budget` (420 s) optional repeats and the second decoder reference are skipped. The CPU
smoke test runs both steps at `--size tiny` (tests/test_gpu_eval_script.py).

Per model family (`--family t5|decoder|both`; t5 first, its memory freed before the decoder):

  models  a RANDOM-weight `transformers` model built directly on the device in `--dtype`
          (`T5ForConditionalGeneration` at Flan-T5-XL's shape, 2.85B parameters; `LlamaForCausalLM`
          at Llama-3-8B's, 8.0B, with a 32,000-piece tokenizer, so ids stay below 32,000 of its
          128,256 embedding rows). Our parameter tree is made from its tensors on the device
          (DLPack, kernels transposed there): no save_pretrained, no host round trip, the same
          weights on both sides.
  work    MMLU test questions cycled through the 57 subjects, each under the two instructions of
          `eval_throughput.py` (4 lettered options, "A".."D" scored): `--questions` x 2
          (question, instruction) pairs, in ONE task so that the engine pools them as it pools a
          subject evaluated under many instructions. Inputs are cut to `--max_input_length` (512
          tokens, Flan-T5's input length; 1% of MMLU inputs are longer). Without ../shared:
          synthetic questions of MMLU-like lengths and byte-level tokenizers (said in the output).
  ours    `robust_prompt.eval.engine.Evaluator.score_chunks` over `plan_pools`, as
          `eval_throughput.py` times it: bucketed static shapes, the input run once per pair, the 4
          options scored in one pass. Tokenization is replayed from the prepared ids (a family
          subclass whose `encode_*` look them up), so neither side's timing includes it.
          Cold = compiling + the first pass. The engine compiles every planned bucket shape ahead
          (`robust_prompt.compile_ahead`), `--compile_threads` at a time: one Llama-3-8B shape took
          43 s to compile on the 2-core development CPU and a pass meets about a dozen shapes, too
          many to compile one after another in the device time (`--compile_threads 0`: the engine
          compiles each when it meets it). Warm = later passes (median of `--repeats`); XLA
          compilations are counted per phase, and there are none after the first pass.
  torch   `eval_throughput.py`'s lm-evaluation-harness loops on the same token ids, run on the
          device (under a `torch.device` context their tensors are made there): t5, one full
          forward (encoder + decoder) per (pair, option) request; decoder, one forward per request,
          and (the harness's default `logits_cache=True`) one per distinct model input, i.e. one per
          pair for one-token letters. `--warmup` untimed batches of the longest requests first;
          `torch.cuda.synchronize()` around each timed pass. On a CPU, a bfloat16 run gives
          PyTorch float32 (said in the output).
  checks  option log-likelihoods of both sides compared (max |difference|, argmax agreement); in
          float32 (`--size tiny --dtype float32`) they must agree to `--tolerance`.
  report  pairs/s each side, the ratio, useful FLOPs and MFU (model FLOPs utilisation: useful
          FLOPs / (time x peak)). Useful FLOPs count real (non-padding) tokens once: 2 x weights x
          tokens for the matrix products plus attention over real keys; each input is run once,
          shared decoder positions (T5's start position, the decoder's context) count once, logits
          only where a score reads them, cross-attention in its cheaper exact form
          (`attention.absorbed_is_cheaper`); within 0.5-3% of XLA's own count of an unpadded step
          (tested). Peak: the H200's bf16 dense datasheet figure on an NVIDIA H200, else this
          machine's measured matrix-multiply rate (`common.matmul_peak_gflops`). Targets
          (issue 15): >= 2x PyTorch and >= 40% MFU, warm.

Memory (H200, 141 GB): ours takes at most `XLA_PYTHON_CLIENT_MEM_FRACTION` (0.55 unless set) and
allocates as it goes; PyTorch the rest. Llama-3-8B at the default batches: 16 GB of weights per
side; ours ~21 GB of activations at the longest bucket (128 x 512: f32 attention logits 4.3 GB, all
layers' keys/values 8.6 GB, SwiGLU 5.6 GB), PyTorch ~40 GB (128 x 513 x 128,256 bf16 logits and
their log-softmax, 17 GB each). Flan-T5-XL: 5.7 GB of weights, activations well under those.
Peaks are printed.

Time (device, estimated): imports ~20 s; per family building ~10-20 s, compiling 11-12 shapes (a
wave of `--compile_threads` costs about one compile, 20-60 s), then, at 40% MFU, ours 3 passes of
~1.5 s (t5: 0.53 PFLOP of useful work a pass) or ~8 s (decoder: 3.15 PFLOP), PyTorch ~10 s (t5)
or ~30 + 8 s (decoder; it computes every option's input again). Every phase is timed and printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import pathlib
import random
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402
  COMPILE_EVENT,
  HF_SIZES,
  SHARED,
  SPIECE,
  VOCAB_SIZE,
  cpu_threads,
  matmul_peak_gflops,
  pair_flops,
)

FAMILIES = ("t5", "decoder")
TASK = "mmlu:mixed"  # every question in one task: one pool, as a subject under many instructions
PREPARED_FORMAT = 1
MMLU_DIR = SHARED / "data" / "mmlu"

# Llama-3-8B (meta-llama/Meta-Llama-3-8B's config.json) as `transformers.LlamaConfig` keyword
# arguments; BOS/EOS are those of the 32,000-piece tokenizer we tokenize with (ids 1 and 2).
LLAMA3_8B = dict(
  vocab_size=128256,
  hidden_size=4096,
  intermediate_size=14336,
  num_hidden_layers=32,
  num_attention_heads=32,
  num_key_value_heads=8,
  max_position_embeddings=8192,
  rope_theta=500000.0,
  tie_word_embeddings=False,
)

# Per --size: questions, and per family the architecture and the batches. Full size, measured on
# the prepared inputs: batches of 128 rows give 80% real tokens (16 batches, 12 shapes for t5 and
# 11 for the decoder) of MMLU's long-tailed lengths; 256 rows would give 69-71% (the tail batch is
# padded to 512), 64 rows 85% for 13-14 shapes. That is 5k-65k tokens per batch. PyTorch gets the
# most requests per batch that fit beside our side (its first batch is the longest): see the
# memory note above.
SIZES = {
  "full": {
    "questions": 1024,
    "t5": {"arch": "flan-t5-xl", "batch_size": 128, "torch_batch_size": 256},
    "decoder": {"arch": "llama3-8b", "batch_size": 128, "torch_batch_size": 128},
  },
  "tiny": {
    "questions": 4,
    "t5": {"arch": "t5-tiny", "batch_size": 4, "torch_batch_size": 8},
    "decoder": {"arch": "llama-tiny", "batch_size": 4, "torch_batch_size": 8},
  },
}

# Dense (not 2:4 sparse) bf16 tensor-core peaks by `jax.Device.device_kind`, FLOP/s. NVIDIA H200
# (SXM) datasheet, nvidia.com/en-us/data-center/h200: "BF16 Tensor Core 1,979 TFLOPS" is with
# sparsity; dense is half, 989 TFLOP/s (the H100 SXM's figure). A matrix product of random bf16
# data reaches 770-800 TFLOP/s on this workplace's H200s (/work/.library/device/KINDS.md).
BF16_DENSE_PEAK = {"NVIDIA H200": 989e12}

# The clock that counts compilations (jax has no public way to remove a listener: one is
# registered per process and reports to the clock of the current run).
_COUNTING: list[Clock] = []


# --------------------------------------------------------------------------- clock and phases


class Clock:
  """Wall time since the start, per-phase durations (printed as they end) and XLA compiles."""

  def __init__(self, budget_s: float):
    self.start = time.perf_counter()
    self.budget_s = budget_s
    self.phases: list[dict[str, Any]] = []
    self.compiles = 0
    self.compile_s = 0.0

  def elapsed(self) -> float:
    return time.perf_counter() - self.start

  def over_budget(self) -> bool:
    return self.elapsed() > self.budget_s

  @contextmanager
  def phase(self, family: str, name: str) -> Iterator[dict[str, Any]]:
    """Times a phase; the yielded dict receives the phase's XLA compile count and seconds."""
    record: dict[str, Any] = {"family": family, "phase": name}
    compiles, compile_s = self.compiles, self.compile_s
    start = time.perf_counter()
    try:
      yield record
    finally:
      record["seconds"] = time.perf_counter() - start
      record["xla_compiles"] = self.compiles - compiles
      record["xla_compile_s"] = self.compile_s - compile_s
      self.phases.append(record)
      extra = ""
      if record["xla_compiles"]:
        extra = f"  ({record['xla_compiles']} XLA compiles, {record['xla_compile_s']:.1f}s)"
      print(
        f"[{self.elapsed():7.1f}s] {family}: {name} {record['seconds']:.2f}s{extra}", flush=True
      )

  def listen_to_compiles(self) -> None:
    """Counts XLA compilations (and their seconds) from now on, per phase."""
    import jax

    def on_event(event: str, duration: float, *args, **kwargs) -> None:
      if event == COMPILE_EVENT and _COUNTING:
        _COUNTING[0].compiles += 1
        _COUNTING[0].compile_s += duration

    if not _COUNTING:
      jax.monitoring.register_event_duration_secs_listener(on_event)
    _COUNTING[:] = [self]


# --------------------------------------------------------------------------- models


def hf_config(family: str, arch: str):
  """The `transformers` config of an architecture (the keyword arguments of eval_throughput.py)."""
  import transformers

  if family == "t5":
    return transformers.T5Config(
      vocab_size=VOCAB_SIZE,
      dropout_rate=0.0,
      decoder_start_token_id=0,
      pad_token_id=0,
      eos_token_id=1,
      **HF_SIZES[arch],
    )
  from benchmarks.eval_throughput import DECODER_SIZES, DECODER_VOCAB_SIZE

  if arch == "llama3-8b":
    kwargs = dict(LLAMA3_8B)
  else:
    kwargs = dict(
      vocab_size=DECODER_VOCAB_SIZE,
      max_position_embeddings=2048,
      rope_theta=10000.0,
      **DECODER_SIZES[arch],
    )
  # SDPA: what `from_pretrained` picks for Llama where PyTorch has it.
  return transformers.LlamaConfig(
    rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, attn_implementation="sdpa", **kwargs
  )


def our_config(family: str, config, dtype: str):
  """Our `T5Config` / `DecoderConfig` of a `transformers` config, in `dtype` throughout."""
  if family == "t5":
    from robust_prompt.model.config import T5Config

    return T5Config.from_hf_dict(config.to_dict(), dtype=dtype, param_dtype=dtype)
  from robust_prompt.model.decoder_config import DecoderConfig

  return DecoderConfig.from_hf_dict(config.to_dict(), dtype=dtype, param_dtype=dtype)


def build_torch_model(family: str, config, dtype, device: str, seed: int):
  """A random-weight PyTorch model created on `device` in `dtype` (initialised there too)."""
  import torch
  import transformers

  torch.manual_seed(seed)
  cls = transformers.T5ForConditionalGeneration if family == "t5" else transformers.LlamaForCausalLM
  with torch.device(device):
    model = cls._from_config(config, dtype=dtype)
  return model.eval()


def params_from_torch(family: str, config, torch_model) -> dict:
  """Our parameter tree from the PyTorch model's tensors, on the same device (DLPack).

  The names come from the checkpoint loaders' own tables (`hf_names.param_layout`,
  `hf_decoder.param_layout`): the loaders themselves read numpy arrays on the host, which at these
  sizes would be a 6-16 GB round trip. Tensors that are not transposed are shared with PyTorch.
  """
  import jax
  import jax.numpy as jnp

  from robust_prompt.checkpoints import hf_decoder, hf_names

  layout = hf_names.param_layout(config) if family == "t5" else hf_decoder.param_layout(config)
  state = torch_model.state_dict()  # tied tensors appear under each of their names
  dtype = jnp.dtype(config.param_dtype)
  tree: dict[str, Any] = {}
  for hf_name, path, transpose, shape in layout:
    tensor = state.get(hf_name)
    if tensor is None and hf_name == "lm_head.weight":
      tensor = state["shared.weight"]  # a tied T5 output layer saved under one name only
    x = jax.dlpack.from_dlpack(tensor.detach().contiguous())
    x = (x.T if transpose else x).astype(dtype)
    if tuple(x.shape) != tuple(shape):
      raise ValueError(f"{hf_name}: {tuple(x.shape)} where our tree expects {tuple(shape)}")
    node = tree
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = x
  jax.block_until_ready(tree)
  return tree


# --------------------------------------------------------------------------- inputs


def instructions():
  from benchmarks.eval_throughput import instructions as eval_instructions

  return eval_instructions()


def mmlu_examples(limit: int) -> list | None:
  """The first `limit` MMLU test questions cycling through the subjects (None without ../shared).

  The order of `common.mmlu_questions`: question i of every subject (in name order), then i + 1.
  """
  from robust_prompt.data import mmlu

  if not (MMLU_DIR / "test").is_dir():
    return None
  per_subject = [mmlu.load_subject(MMLU_DIR, s) for s in mmlu.list_subjects(MMLU_DIR)]
  out, i = [], 0
  while len(out) < limit and any(i < len(rows) for rows in per_subject):
    for rows in per_subject:
      if i < len(rows) and len(out) < limit:
        out.append(rows[i])
    i += 1
  return out


def synthetic_examples(limit: int, seed: int = 0) -> list:
  """MMLU-like multiple-choice questions of random words (long-tailed lengths, 4 options)."""
  from robust_prompt.data.example import Example

  rng = random.Random(seed)
  words = (
    "the of which following is a an most likely correct statement about energy cell law court "
    "market price theory value system function patient study effect cause population species"
  ).split()
  out = []
  for i in range(limit):
    # Question words: median ~27, a long tail (MMLU's median input is ~76 T5 tokens, p99 ~500).
    n = min(max(int(rng.lognormvariate(3.3, 0.8)), 4), 350)
    question = " ".join(rng.choice(words) for _ in range(n)) + "?"
    options = tuple(" ".join(rng.choice(words) for _ in range(rng.randint(1, 8))) for _ in "ABCD")
    answer = i % 4
    out.append(
      Example(
        id=f"synthetic:{i}",
        task="mmlu:synthetic",
        fields={"question": question, "subject": "synthetic questions"},
        options=options,
        answer=answer,
        correct=(answer,),
      )
    )
  return out


def byte_tokenizer(out_dir: pathlib.Path) -> None:
  """Writes a byte-level `tokenizer.json` in Llama's layout (<unk> 0, <s> 1, </s> 2; BOS first).

  The fallback when ../shared (and with it the T5 SentencePiece pieces that
  `eval_throughput.save_decoder_tokenizer` turns into a 32,000-piece tokenizer) is absent.
  """
  from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

  specials = ["<unk>", "<s>", "</s>"]
  alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
  vocab = {token: i for i, token in enumerate(specials + alphabet)}
  tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
  tok.post_processor = processors.TemplateProcessing(
    single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
  )
  out_dir.mkdir(parents=True, exist_ok=True)
  tok.save(str(out_dir / "tokenizer.json"))
  config = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
  (out_dir / "tokenizer_config.json").write_text(json.dumps(config))


def family_vocabulary(family: str, synthetic: bool, tmp: pathlib.Path):
  """(vocabulary, description) the family tokenizes with; files it needs are written to `tmp`."""
  from robust_prompt import vocab as vocab_lib

  if family == "t5":
    if synthetic or not SPIECE.is_file():
      return vocab_lib.load_vocabulary(vocab_lib.BYTE_SPEC), "bytes (ByT5's; no ../shared)"
    return vocab_lib.load_vocabulary(str(SPIECE)), f"T5 SentencePiece ({SPIECE})"
  if synthetic or not SPIECE.is_file():
    byte_tokenizer(tmp)
    return vocab_lib.load_decoder_vocabulary(tmp), "byte-level BPE without merges (no ../shared)"
  from benchmarks.eval_throughput import save_decoder_tokenizer

  save_decoder_tokenizer(tmp)
  return (
    vocab_lib.load_decoder_vocabulary(tmp),
    "32,000-piece Llama-layout tokenizer.json from the T5 SentencePiece pieces",
  )


def record_tokens(model, vocab, evaluator, chunks) -> dict[str, list]:
  """Every tokenization the engine asks of `model` for `chunks`, as JSON-ready lists.

  The engine tokenizes whole inputs and options (`max_length=None`) and again at its caps those
  that are longer; both are recorded for every text, so the replay never needs the vocabulary.
  """
  settings = evaluator.settings
  inputs: dict[tuple, list[int]] = {}
  options: dict[tuple, list[list[int]]] = {}
  for chunk in chunks:
    texts = evaluator.texts(chunk)
    opts = [list(r.options) for r in chunk.rendered]
    for cap in (None, settings.max_input_length):
      for text, ids in zip(texts, model.encode_inputs(vocab, texts, cap)):
        inputs[(text, cap)] = [int(i) for i in ids]
    for cap in (None, settings.max_target_length):
      for text, row, ids in zip(texts, opts, model.encode_options(vocab, texts, opts, cap)):
        options[(text, tuple(row), cap)] = [[int(i) for i in o] for o in ids]
  return {
    "inputs": [[text, cap, ids] for (text, cap), ids in inputs.items()],
    "options": [[text, list(row), cap, ids] for (text, row, cap), ids in options.items()],
  }


def replaying(model, tokens: Mapping[str, list]):
  """`model`'s family with `encode_inputs` / `encode_options` looked up in recorded `tokens`.

  A subclass of the family: its device methods, hash and equality (hence `eval_step`'s cache) are
  the family's own; only the host-side tokenization is replaced.
  """
  inputs = {(text, cap): ids for text, cap, ids in tokens["inputs"]}
  options = {(text, tuple(row), cap): ids for text, row, cap, ids in tokens["options"]}

  def lookup(table: dict, key: tuple):
    if key not in table:
      raise KeyError(
        f"no prepared token ids for {key[0][:60]!r}... at max_length {key[-1]}: the engine asked "
        "for a tokenization that --prepare did not record; prepare the inputs again"
      )
    return table[key]

  def encode_inputs(self, vocab, texts, max_length):
    return [list(lookup(inputs, (t, max_length))) for t in texts]

  def encode_options(self, vocab, texts, opts, max_length):
    return [
      [list(o) for o in lookup(options, (t, tuple(row), max_length))] for t, row in zip(texts, opts)
    ]

  base = type(model)
  cls = type(
    f"Replayed{base.__name__}",
    (base,),
    {"encode_inputs": encode_inputs, "encode_options": encode_options},
  )
  return cls(**{f.name: getattr(model, f.name) for f in dataclasses.fields(model)})


def prepare(family: str, size: str, questions: int, max_input_length: int) -> dict:
  """Renders and tokenizes the work of one family (needs seqio; MMLU from ../shared if there)."""
  from robust_prompt.eval import engine
  from robust_prompt.model import prompted

  examples = mmlu_examples(questions)
  source = "mmlu"
  if examples is None:
    print(
      f"note: no MMLU test CSVs in {MMLU_DIR / 'test'} (../shared beside the checkout): "
      f"{questions} SYNTHETIC MMLU-like questions instead"
    )
    examples, source = synthetic_examples(questions), "synthetic"
  arch = SIZES[size][family]["arch"]
  config = our_config(family, hf_config(family, arch), "float32")
  model = prompted.for_config(config)
  settings = engine.evaluate_settings(max_input_length=max_input_length)
  chunks = engine.plan_chunks({TASK: examples}, instructions())
  with tempfile.TemporaryDirectory() as tmp:
    vocab, vocab_name = family_vocabulary(family, source == "synthetic", pathlib.Path(tmp))
    tokens = record_tokens(model, vocab, engine.Evaluator(model, None, vocab, settings), chunks)
  return {
    "format": PREPARED_FORMAT,
    "family": family,
    "source": source,
    "tokenizer": vocab_name,
    "questions": len(examples),
    "max_input_length": settings.max_input_length,
    "max_target_length": settings.max_target_length,
    "examples": [e.to_json() for e in examples],
    "tokens": tokens,
  }


def prepared_path(inputs_dir: pathlib.Path, family: str) -> pathlib.Path:
  return inputs_dir / f"{family}.json"


def load_prepared(path: pathlib.Path, family: str) -> dict:
  data = json.loads(path.read_text(encoding="utf-8"))
  if data.get("format") != PREPARED_FORMAT or data.get("family") != family:
    raise SystemExit(
      f"{path}: not prepared inputs of the {family} family in format {PREPARED_FORMAT}; "
      "prepare them again (--prepare)"
    )
  return data


def allow_imports_without_seqio() -> bool:
  """Lets the model families import where seqio/TensorFlow are not installed (the GPU image).

  `prompted_t5`, `prompted_decoder` and the checkpoint loaders import `robust_prompt.vocab`,
  which needs seqio and TensorFlow; the device run uses none of it (token ids are prepared), so a
  stand-in module takes its place whose every attribute raises, naming the missing tokenizer.

  Returns:
    Whether the stand-in was installed.
  """
  import types

  try:
    import robust_prompt.vocab  # noqa: F401
  except ImportError as e:
    missing = e.name
  else:
    return False
  import robust_prompt

  stand_in = types.ModuleType(
    "robust_prompt.vocab", f"Stand-in: the real module needs {missing}, which is not installed."
  )

  def __getattr__(name: str):
    # AttributeError, so that `hasattr` (inspect, pickle, ...) works on the stand-in.
    raise AttributeError(
      f"robust_prompt.vocab.{name} is unavailable here ({missing} is not installed): tokenize "
      "with `gpu_eval.py --prepare` on a machine that has it"
    )

  stand_in.__getattr__ = __getattr__
  sys.modules["robust_prompt.vocab"] = stand_in
  robust_prompt.vocab = stand_in
  print(f"note: {missing} is not installed: running from prepared token ids only")
  return True


# --------------------------------------------------------------------------- work and FLOPs


def requests_of(model, evaluator, chunks) -> list[tuple[list[int], list[int]]]:
  """(input ids, option ids) per (pair, option), in chunk, example, option order: the ids the
  engine scores (both cut to its caps)."""
  settings = evaluator.settings
  out = []
  for chunk in chunks:
    texts = evaluator.texts(chunk)
    opts = [list(r.options) for r in chunk.rendered]
    inputs = model.encode_inputs(None, texts, settings.max_input_length)
    options = model.encode_options(None, texts, opts, settings.max_target_length)
    for x, row in zip(inputs, options):
      out.extend((x, o) for o in row)
  return out


def planned_batches(evaluator, run_pass: Callable[[], list]) -> tuple[list[dict], dict[str, int]]:
  """The batches a pass sends to the device: one per distinct shape, and token counts.

  Runs the engine's own planner (`score_chunks`) once with the device step replaced by a recorder
  that returns zero scores (and compiling ahead off), for the plan's figures: batches, shapes,
  real tokens and slots.
  """
  import jax
  import numpy as np

  shapes: dict[tuple, dict] = {}
  stats = {"batches": 0, "real_tokens": 0, "slots": 0}

  def record(params, prompt, batch):
    key = tuple(sorted((k, tuple(v.shape)) for k, v in batch.items()))
    shapes.setdefault(key, batch)
    mask = np.asarray(jax.device_get(batch["input_mask"]))
    stats["batches"] += 1
    stats["real_tokens"] += int(mask.sum())
    stats["slots"] += int(mask.size)
    return np.zeros(batch["option_ids"].shape[:2], np.float32)

  step, settings = evaluator.score_fn, evaluator.settings
  evaluator.score_fn = record
  evaluator.settings = dataclasses.replace(settings, compile_ahead=False)
  try:
    run_pass()
  finally:
    evaluator.score_fn, evaluator.settings = step, settings
  stats["shapes"] = len(shapes)
  return list(shapes.values()), stats


# --------------------------------------------------------------------------- the run


def peak_flops(dtype: str, backend: str) -> tuple[float, str, dict]:
  """(peak FLOP/s for MFU, where it comes from, this machine's measured matmul GFLOP/s)."""
  import jax

  kind = jax.devices()[0].device_kind
  if backend == "gpu":
    measured = matmul_peak_gflops(m=8192, k=8192, n=8192, dtype=dtype)
  else:
    measured = matmul_peak_gflops(repeats=3, dtype=dtype)
  if backend == "gpu" and dtype == "bfloat16" and kind in BF16_DENSE_PEAK:
    return BF16_DENSE_PEAK[kind], f"{kind} bf16 dense, NVIDIA datasheet", measured
  best = max(measured.values())
  return best * 1e9, f"measured {dtype} matmul on {kind} (best of jax / torch)", measured


def device_memory() -> dict[str, float]:
  """Peak device memory in GB of each side (where the device reports it)."""
  import jax
  import torch

  out = {}
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    out["ours_peak_gb"] = stats["peak_bytes_in_use"] / 1e9
  if torch.cuda.is_available():
    out["torch_peak_gb"] = torch.cuda.max_memory_allocated() / 1e9
  return out


def time_torch(
  loop: Callable[[list], list[float]], requests: list, device: str
) -> tuple[float, list[float]]:
  """(seconds, scores) of one reference pass over `requests`, synchronised on a GPU.

  The loops make their tensors with plain `torch.zeros` / `torch.tensor`: under the
  `torch.device` context those are created on `device`, beside the model.
  """
  import torch

  if device == "cuda":
    torch.cuda.synchronize()
  start = time.perf_counter()
  with torch.device(device):
    scores = loop(requests)
  if device == "cuda":
    torch.cuda.synchronize()
  return time.perf_counter() - start, scores


def agreement(rows: Sequence[dict], flat_scores: Sequence[float]) -> dict[str, Any]:
  """Max |option log-likelihood difference| and argmax agreement of the two sides."""
  import numpy as np

  max_diff, agree, at = 0.0, 0, 0
  for row in rows:
    ours = np.asarray(row["option_scores"], np.float64)
    theirs = np.asarray(flat_scores[at : at + len(ours)], np.float64)
    at += len(ours)
    max_diff = max(max_diff, float(np.max(np.abs(ours - theirs))))
    agree += int(np.argmax(theirs)) == row["prediction"]
  return {"max_abs_diff": max_diff, "predictions_agree": agree, "pairs": len(rows)}


def time_reference(
  family: str, torch_model, requests: list, batch_size: int, device: str, args, clock: Clock
) -> tuple[dict[str, dict], list[float]]:
  """Times `eval_throughput.py`'s lm-evaluation-harness loops on `requests`.

  Returns:
    (per loop, its median seconds and every pass's; the per-request loop's scores, in request
    order).
  """
  import torch

  from benchmarks.eval_throughput import hf_lm_eval_causal_loop, hf_lm_eval_loop

  if family == "t5":
    loops = {"per_request": lambda reqs: hf_lm_eval_loop(torch_model, reqs, batch_size)}
  else:
    loops = {
      "per_request": lambda reqs: hf_lm_eval_causal_loop(torch_model, reqs, batch_size, False),
      "logits_cache": lambda reqs: hf_lm_eval_causal_loop(torch_model, reqs, batch_size, True),
    }
    if args.no_logits_cache:
      del loops["logits_cache"]
  # Warm-up: the longest requests, which the loops batch first.
  longest = sorted(requests, key=lambda r: -(len(r[0]) + len(r[1])))[: args.warmup * batch_size]
  if device == "cuda":
    torch.cuda.reset_peak_memory_stats()
  results: dict[str, dict] = {}
  scores: list[float] = []
  for name, loop in loops.items():
    if name != "per_request" and clock.over_budget():
      print(f"note: --time_budget {args.time_budget:.0f}s spent: PyTorch {name} loop skipped")
      continue
    if longest:
      with clock.phase(family, f"torch {name}: warm-up ({len(longest)} longest requests)"):
        time_torch(loop, longest, device)
    times = []
    for i in range(args.torch_repeats):
      if i and clock.over_budget():
        break
      with clock.phase(family, f"torch {name}: timed pass {i + 1}"):
        seconds, out = time_torch(loop, requests, device)
      times.append(seconds)
      if name == "per_request":
        scores = out
    results[name] = {"seconds": statistics.median(times), "times": times}
  return results, scores


def run_family(family: str, args, prepared: dict, clock: Clock, peak: tuple) -> dict[str, Any]:
  """Builds both sides of one family, times them and checks them; returns the results."""
  import jax
  import torch

  from robust_prompt import compile_ahead
  from robust_prompt.data.example import Example
  from robust_prompt.eval import engine
  from robust_prompt.model import prompted

  preset = SIZES[args.size][family]
  batch_size = args.batch_size or preset["batch_size"]
  torch_batch = args.torch_batch_size or preset["torch_batch_size"]
  backend = jax.default_backend()
  device = "cuda" if backend == "gpu" and torch.cuda.is_available() else "cpu"
  torch_dtype = args.dtype
  notes = []
  if device == "cpu" and args.dtype == "bfloat16":
    # PyTorch's CPU bf16 matrix products are slow or emulated on most CPUs.
    torch_dtype = "float32"
    notes.append("PyTorch runs float32 on the CPU (bf16 there is slow or unsupported)")
  if device == "cpu" and backend == "gpu":
    notes.append("PyTorch sees no GPU: it runs on the CPU")
  for note in notes:
    print(f"note: {note}")

  arch = preset["arch"]
  hf_cfg = hf_config(family, arch)
  config = our_config(family, hf_cfg, args.dtype)
  with clock.phase(family, f"build PyTorch {arch} on {device} ({torch_dtype})"):
    torch_model = build_torch_model(family, hf_cfg, getattr(torch, torch_dtype), device, args.seed)
    num_params = sum(p.numel() for p in torch_model.parameters())
  with clock.phase(family, f"our parameters from its tensors ({args.dtype}, DLPack)"):
    params = params_from_torch(family, config, torch_model)

  model = replaying(prompted.for_config(config), prepared["tokens"])
  settings = engine.evaluate_settings(
    batch_size=batch_size,
    max_input_length=prepared["max_input_length"],
    max_target_length=prepared["max_target_length"],
  )
  examples = [Example.from_json(e) for e in prepared["examples"]]
  chunks = engine.plan_chunks({TASK: examples}, instructions())
  evaluator = engine.Evaluator(model, params, None, settings)
  pools = engine.plan_pools(chunks, settings.pool_rows)
  pairs = sum(len(c.examples) for c in chunks)

  def ours_pass() -> list[dict]:
    return [
      row
      for pool in pools
      for rows in evaluator.score_chunks([chunks[i] for i in pool], "ours", run_rows=pairs)
      for row in rows
    ]

  with clock.phase(family, "plan batches (engine dry run)"):
    _, plan = planned_batches(evaluator, ours_pass)
  requests = requests_of(model, evaluator, chunks)
  flops, input_tokens, at = 0.0, 0, 0
  for chunk in chunks:
    for r in chunk.rendered:
      mine = requests[at : at + len(r.options)]
      flops += pair_flops(family, config, len(mine[0][0]), [len(o) for _, o in mine])
      input_tokens += len(mine[0][0])
      at += len(mine)

  # The engine compiles every planned shape ahead, this many at a time (`compile_ahead`).
  compile_ahead.set_num_threads(args.compile_threads or None)
  evaluator.settings = dataclasses.replace(settings, compile_ahead=args.compile_threads > 0)
  cold_start = time.perf_counter()
  with clock.phase(family, "ours: first pass") as first:
    rows = ours_pass()
  cold = time.perf_counter() - cold_start
  warm_times = []
  warm_compiles = 0
  for i in range(args.repeats):
    if i and clock.over_budget():
      print(f"note: --time_budget {args.time_budget:.0f}s spent: {i} of {args.repeats} warm passes")
      break
    with clock.phase(family, f"ours: warm pass {i + 1}") as record:
      rows = ours_pass()
    warm_times.append(record["seconds"])
    warm_compiles += record["xla_compiles"]
  warm = statistics.median(warm_times)

  torch_results, scores = time_reference(
    family, torch_model, requests, torch_batch, device, args, clock
  )
  for t in torch_results.values():
    t["pairs_per_s"] = pairs / t["seconds"]
    t["mfu"] = flops / (t["seconds"] * peak[0])
  check = agreement(rows, scores)
  check["dtype"] = (
    args.dtype if args.dtype == torch_dtype else f"ours {args.dtype}, torch {torch_dtype}"
  )
  exact = args.dtype == "float32" and torch_dtype == "float32"
  check["tolerance"] = args.tolerance if exact else None
  check["ok"] = check["max_abs_diff"] <= args.tolerance if exact else None
  ref = torch_results["per_request"]
  result = {
    "family": family,
    "arch": arch,
    "parameters": num_params,
    "dtype": args.dtype,
    "torch_dtype": torch_dtype,
    "backend": backend,
    "device_kind": jax.devices()[0].device_kind,
    "torch_device": device,
    "source": prepared["source"],
    "tokenizer": prepared["tokenizer"],
    "questions": prepared["questions"],
    "pairs": pairs,
    "requests": len(requests),
    "batch_size": evaluator.batch_size,
    "torch_batch_size": torch_batch,
    "plan": plan,
    "input_tokens": input_tokens,
    "useful_flops": flops,
    "peak_flops": peak[0],
    "peak_source": peak[1],
    "ours": {
      "cold_s": cold,
      "cold_xla_compiles": first["xla_compiles"],
      "cold_xla_compile_s": first["xla_compile_s"],
      "compile_threads": args.compile_threads,
      "warm_s": warm,
      "warm_times": warm_times,
      "warm_xla_compiles": warm_compiles,
      "pairs_per_s": pairs / warm,
      "cold_pairs_per_s": pairs / cold,
      "mfu": flops / (warm * peak[0]),
    },
    "torch": torch_results,
    "ratio": ref["seconds"] / warm,
    "ratio_cold": ref["seconds"] / cold,
    "targets": {
      "ratio_2x": ref["seconds"] / warm >= 2.0,
      "mfu_40pct": flops / (warm * peak[0]) >= 0.40,
    },
    "agreement": check,
    "memory": device_memory(),
    "notes": notes,
  }
  if "logits_cache" in torch_results:
    result["ratio_logits_cache"] = torch_results["logits_cache"]["seconds"] / warm
  print_family(result)
  return result


def free_device_memory() -> None:
  """Releases what a finished family left: its arrays (once unreferenced), compiled steps and
  PyTorch's cached blocks, before the next family is built."""
  import jax
  import torch

  from robust_prompt.eval import engine

  engine.eval_step.cache_clear()
  jax.clear_caches()
  gc.collect()
  if torch.cuda.is_available():
    torch.cuda.empty_cache()


def print_family(r: dict[str, Any]) -> None:
  ours, plan = r["ours"], r["plan"]
  print(
    f"\n== {r['family']}: {r['arch']} shape ({r['parameters'] / 1e6:,.1f}M parameters, random "
    f"weights), ours {r['dtype']} on {r['device_kind']}, PyTorch {r['torch_dtype']} on "
    f"{r['torch_device']}"
  )
  print(
    f"work: {r['pairs']} (question x instruction) pairs ({r['questions']} {r['source']} questions "
    f"x 2 instructions), {r['requests']} (pair, option) requests; tokenizer: {r['tokenizer']}"
  )
  print(
    f"ours: {plan['batches']} batches of {r['batch_size']} rows, {plan['shapes']} shapes, "
    f"{plan['real_tokens']} real input tokens in {plan['slots']} slots "
    f"({plan['real_tokens'] / max(plan['slots'], 1):.0%} real)"
  )
  print(
    f"  ours  warm  {ours['warm_s']:8.2f}s  {ours['pairs_per_s']:9.1f} pairs/s  "
    f"(median of {len(ours['warm_times'])}; {ours['warm_xla_compiles']} XLA compiles)"
  )
  print(
    f"  ours  cold  {ours['cold_s']:8.2f}s  {ours['cold_pairs_per_s']:9.1f} pairs/s  "
    f"(incl. {ours['cold_xla_compiles']} XLA compiles, {ours['cold_xla_compile_s']:.1f}s of "
    f"compiling, {ours['compile_threads']} threads)"
  )
  labels = {
    "per_request": "lm-eval loop, one forward per request",
    "logits_cache": "lm-eval logits cache, one forward per distinct input",
  }
  for name, t in r["torch"].items():
    print(
      f"  torch warm  {t['seconds']:8.2f}s  {t['pairs_per_s']:9.1f} pairs/s  ({labels[name]}, "
      f"batch {r['torch_batch_size']})"
    )

  def met(ok: bool) -> str:
    return "met" if ok else "NOT met"

  targets = r["targets"]
  line = f"ratio ours / torch (warm): {r['ratio']:.2f}x [target >= 2x: {met(targets['ratio_2x'])}]"
  if "ratio_logits_cache" in r:
    line += f"; vs the logits-cache loop {r['ratio_logits_cache']:.2f}x"
  print(line + f"; cold {r['ratio_cold']:.2f}x")
  print(
    f"useful work {r['useful_flops']:.3e} FLOP per pass; peak {r['peak_flops'] / 1e12:.3g} "
    f"TFLOP/s ({r['peak_source']})"
  )
  others = ", ".join(f"torch {k} {v['mfu']:.1%}" for k, v in r["torch"].items())
  print(f"MFU ours {ours['mfu']:.1%} [target >= 40%: {met(targets['mfu_40pct'])}]; {others}")
  a = r["agreement"]
  verdict = ""
  if a["ok"] is not None:
    verdict = " ok" if a["ok"] else f" FAILED (tolerance {a['tolerance']})"
  print(
    f"agreement ({a['dtype']}): predictions {a['predictions_agree']}/{a['pairs']} pairs, max "
    f"|option log-likelihood difference| {a['max_abs_diff']:.2e}{verdict}"
  )
  if r["memory"]:
    print("memory peaks: " + ", ".join(f"{k} {v:.1f}" for k, v in r["memory"].items()))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--family", choices=(*FAMILIES, "both"), default="both")
  parser.add_argument(
    "--size",
    choices=sorted(SIZES),
    default="full",
    help="full: Flan-T5-XL and Llama-3-8B shapes; tiny: seconds on a CPU (the smoke test)",
  )
  parser.add_argument("--questions", type=int, help="MMLU questions (x 2 instructions = pairs)")
  parser.add_argument("--batch_size", type=int, help="our rows per batch (default: per size)")
  parser.add_argument("--torch_batch_size", type=int, help="PyTorch requests per batch")
  parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
  parser.add_argument("--max_input_length", type=int, default=512)
  parser.add_argument("--warmup", type=int, default=1, help="untimed PyTorch batches first")
  parser.add_argument("--repeats", type=int, default=2, help="timed warm passes of ours")
  parser.add_argument("--torch_repeats", type=int, default=1, help="timed PyTorch passes")
  parser.add_argument(
    "--compile_threads",
    type=int,
    default=12,
    help="the engine compiles every planned shape ahead, this many at a time (a full-size pass "
    "has 11-12 shapes; 0: each shape compiles when the engine first meets it)",
  )
  parser.add_argument(
    "--time_budget",
    type=float,
    default=420.0,
    help="seconds; past it, optional repeats and the logits-cache reference are skipped",
  )
  parser.add_argument("--tolerance", type=float, default=1e-3, help="float32 max |diff| allowed")
  parser.add_argument("--no_logits_cache", action="store_true", help="decoder: one loop only")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument(
    "--inputs",
    type=pathlib.Path,
    help="folder of prepared token ids (<family>.json); read if there, else prepared here",
  )
  parser.add_argument(
    "--prepare",
    action="store_true",
    help="only tokenize the work into --inputs (needs seqio; MMLU from ../shared)",
  )
  parser.add_argument("--json", type=pathlib.Path, help="write the results here")
  args = parser.parse_args(argv)
  if args.prepare and args.inputs is None:
    parser.error("--prepare needs --inputs FOLDER")
  for name, least in (("repeats", 1), ("torch_repeats", 1), ("warmup", 0), ("compile_threads", 0)):
    if getattr(args, name) < least:
      parser.error(f"--{name} must be >= {least}")
  args.questions = args.questions or SIZES[args.size]["questions"]
  return args


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  families = FAMILIES if args.family == "both" else (args.family,)
  # Both frameworks share the GPU: ours allocates as it goes, up to this share (XLA's default is
  # to take 75% at start, leaving PyTorch too little).
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.55")
  threads = cpu_threads()
  clock = Clock(args.time_budget)

  if args.prepare:
    args.inputs.mkdir(parents=True, exist_ok=True)
    for family in families:
      with clock.phase(family, "prepare (render + tokenize)"):
        data = prepare(family, args.size, args.questions, args.max_input_length)
      path = prepared_path(args.inputs, family)
      path.write_text(json.dumps(data), encoding="utf-8")
      print(f"{family}: {data['questions']} {data['source']} questions -> {path}")
    return 0

  prepared = {}
  for family in families:
    path = None if args.inputs is None else prepared_path(args.inputs, family)
    if path is not None and path.is_file():
      prepared[family] = load_prepared(path, family)
      if prepared[family]["questions"] != args.questions:
        print(
          f"note: {path} holds {prepared[family]['questions']} questions; they are the work "
          f"(not --questions {args.questions})"
        )
      continue
    if allow_imports_without_seqio():
      raise SystemExit(
        f"no prepared inputs for {family} at {path} and no tokenizer here: run "
        "`python benchmarks/gpu_eval.py --prepare --inputs FOLDER` where seqio is installed"
      )
    with clock.phase(family, "prepare (render + tokenize)"):
      prepared[family] = prepare(family, args.size, args.questions, args.max_input_length)
    if path is not None:
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_text(json.dumps(prepared[family]), encoding="utf-8")
  allow_imports_without_seqio()

  import jax
  import torch

  clock.listen_to_compiles()
  backend = jax.default_backend()
  if backend == "cpu":
    torch.set_num_threads(threads)
  print(
    f"jax {jax.__version__} ({backend}: {jax.devices()[0].device_kind}), torch {torch.__version__}"
    f" (CUDA: {torch.cuda.is_available()}), {threads} CPU threads"
  )
  with clock.phase("all", "peak matmul rate"):
    peak = peak_flops(args.dtype, backend)
  print(
    f"peak for MFU: {peak[0] / 1e12:.3g} TFLOP/s ({peak[1]}); measured matmul: "
    + ", ".join(f"{k} {v / 1e3:.3g} TFLOP/s" for k, v in peak[2].items())
  )
  results: dict[str, Any] = {
    "args": {k: str(v) if isinstance(v, pathlib.Path) else v for k, v in vars(args).items()},
    "peak": {"flops": peak[0], "source": peak[1], "measured_gflops": peak[2]},
    "families": {},
  }
  failed = False
  for family in families:
    try:
      results["families"][family] = run_family(family, args, prepared[family], clock, peak)
    except Exception as e:  # the other family still runs: a device run is expensive to repeat
      traceback.print_exc()
      results["families"][family] = {"error": f"{type(e).__name__}: {e}"}
      failed = True
    free_device_memory()
    results["phases"] = clock.phases
    results["elapsed_s"] = clock.elapsed()
    if args.json is not None:
      args.json.parent.mkdir(parents=True, exist_ok=True)
      args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
  print(f"\ntotal {clock.elapsed():.1f}s")
  bad = [f for f, r in results["families"].items() if r.get("agreement", {}).get("ok") is False]
  if bad:
    print(f"FAILED: scores of {', '.join(bad)} differ from PyTorch's beyond --tolerance")
  return 1 if failed or bad else 0


if __name__ == "__main__":
  sys.exit(main())
