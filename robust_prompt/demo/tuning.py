"""Instruction tuning of the demo's tiny T5 from scratch, reproducibly, on CPU.

The recipe (`TuneConfig`) is: a SentencePiece vocabulary trained on text rendered through the
*observed* templates only; a small T5 1.1-style model (gated-GELU, untied output layer, as
Flan-T5) initialised from `seed`; AdamW on teacher-forced cross-entropy of the answer string, every
step a fresh batch of generated examples under randomly drawn observed templates.

Everything is a pure function of the config: batch `s` is drawn from `(seed, "tune", s)`, the
initialisation from `PRNGKey(seed)`, shapes are static (one compilation) and the step runs on one
CPU device, so two runs give bit-identical parameters (`params_digest`) on the same software and
CPU type. `scripts/build_demo_model.py` calls `build_model`; tests re-run a short prefix.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import os
import pathlib
import string
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import seqio

from robust_prompt import vocab as vocab_lib
from robust_prompt.demo import suite
from robust_prompt.demo.instructions import demo_instructions
from robust_prompt.instructions.render import render
from robust_prompt.model import scoring
from robust_prompt.model.config import T5Config
from robust_prompt.model.t5 import T5
from robust_prompt.partitioning import unbox


@dataclasses.dataclass(frozen=True)
class TuneConfig:
  """The whole recipe of the demo model (its fields are stored with the checkpoint).

  Attributes:
    seed: vocabulary corpus, initialisation and batch order.
    num_steps / batch_size: optimizer steps and rows per step (`B`).
    learning_rate / warmup_steps / weight_decay: AdamW with linear warm-up, then cosine decay
      to 10% of the peak; gradients clipped to global norm 1.
    max_input_length / max_target_length: `T` / `S` in tokens, EOS included.
    vocab_size: SentencePiece pieces (a soft limit: the corpus may support fewer).
    vocab_corpus_size: rendered examples the vocabulary is trained on.
    d_model, num_heads, head_dim, d_ff, num_layers: the architecture (encoder = decoder depth).
  """

  seed: int = 0
  num_steps: int = 800
  batch_size: int = 64
  learning_rate: float = 2e-3
  warmup_steps: int = 200
  weight_decay: float = 0.01
  max_input_length: int = 56
  max_target_length: int = 6
  vocab_size: int = 512
  vocab_corpus_size: int = 20000
  d_model: int = 64
  num_heads: int = 4
  head_dim: int = 16
  d_ff: int = 192
  num_layers: int = 2

  def model_config(self, vocab_size: int) -> T5Config:
    """The `T5Config` for a vocabulary of `vocab_size` ids (rounded up to a multiple of 64)."""
    return T5Config(
      vocab_size=-(-vocab_size // 64) * 64,
      d_model=self.d_model,
      num_heads=self.num_heads,
      head_dim=self.head_dim,
      d_ff=self.d_ff,
      num_encoder_layers=self.num_layers,
      num_decoder_layers=self.num_layers,
      feed_forward_proj="gated-gelu",
      tie_word_embeddings=False,
    )


# -- vocabulary ----------------------------------------------------------------------------------


def _observed_by_task() -> dict[str, list]:
  by_task: dict[str, list] = {t: [] for t in suite.TASKS}
  for inst in demo_instructions()["observed"]:
    by_task[inst.tasks[0].split(":", 1)[1]].append(inst)
  return by_task


def _draw(rng: np.random.Generator, observed: dict[str, list]):
  """One (rendered input, target) pair: a random task, a fresh example, an observed template."""
  tasks = list(suite.TASKS)
  task = tasks[int(rng.integers(len(tasks)))]
  line = suite.TASKS[task](rng)
  example = suite.lines_to_examples(task, [line])[0]
  instruction = observed[task][int(rng.integers(len(observed[task])))]
  rendered = render(instruction, example)
  return rendered.inputs, rendered.targets[0]


def vocabulary_corpus(config: TuneConfig) -> list[str]:
  """Text the vocabulary is trained on: inputs and targets under observed templates only.

  A line of every printable ASCII character is added so that paraphrases never hit an unknown
  piece: their words are made of pieces the model has seen, in orders it has not.
  """
  rng = np.random.default_rng(suite.stream_seed(config.seed, "vocab"))
  observed = _observed_by_task()
  lines = []
  for _ in range(config.vocab_corpus_size):
    inputs, target = _draw(rng, observed)
    lines.append(inputs.replace("\n", " "))
    lines.append(target)
  lines.append(" ".join(string.ascii_letters + string.digits + string.punctuation))
  return lines


def train_vocabulary(config: TuneConfig) -> bytes:
  """A unigram SentencePiece model (pad 0, EOS 1, UNK 2, as T5) as serialized bytes.

  Deterministic: one thread, fixed corpus order, no sampling.
  """
  import sentencepiece as spm

  out = io.BytesIO()
  spm.SentencePieceTrainer.train(
    sentence_iterator=iter(vocabulary_corpus(config)),
    model_writer=out,
    model_type="unigram",
    vocab_size=config.vocab_size,
    hard_vocab_limit=False,
    character_coverage=1.0,
    num_threads=1,
    pad_id=0,
    eos_id=1,
    unk_id=2,
    bos_id=-1,
    minloglevel=2,
  )
  return out.getvalue()


def load_vocabulary(path: str | os.PathLike) -> seqio.SentencePieceVocabulary:
  """The demo's vocabulary (no T5 sentinel ids: the model is never trained on span corruption)."""
  return vocab_lib.load_vocabulary(path, extra_ids=0)


# -- batches -------------------------------------------------------------------------------------


def _pad(rows: list[list[int]], length: int) -> tuple[np.ndarray, np.ndarray]:
  ids = np.zeros((len(rows), length), np.int32)
  for r, seq in enumerate(rows):
    ids[r, : len(seq)] = seq
  return ids, (ids != 0).astype(np.int32)


class TuningBatches:
  """Batch `step` of the tuning stream: a pure function of `(config.seed, step)`."""

  def __init__(self, config: TuneConfig, vocab: seqio.Vocabulary):
    self.config = config
    self.vocab = vocab
    self._observed = _observed_by_task()

  def __call__(self, step: int) -> dict[str, np.ndarray]:
    """Returns input_ids/input_mask `[B, T]` and target_ids/target_mask `[B, S]` int32."""
    cfg = self.config
    rng = np.random.default_rng([*suite.stream_seed(cfg.seed, "tune"), int(step)])
    pairs = [_draw(rng, self._observed) for _ in range(cfg.batch_size)]
    inputs = vocab_lib.encode_inputs(self.vocab, [p[0] for p in pairs], cfg.max_input_length)
    targets = vocab_lib.encode_targets(self.vocab, [p[1] for p in pairs], cfg.max_target_length)
    input_ids, input_mask = _pad(inputs, cfg.max_input_length)
    target_ids, target_mask = _pad(targets, cfg.max_target_length)
    return {
      "input_ids": input_ids,
      "input_mask": input_mask,
      "target_ids": target_ids,
      "target_mask": target_mask,
    }


# -- training ------------------------------------------------------------------------------------


def make_optimizer(config: TuneConfig) -> optax.GradientTransformation:
  schedule = optax.warmup_cosine_decay_schedule(
    0.0,
    config.learning_rate,
    config.warmup_steps,
    max(config.num_steps, config.warmup_steps + 1),
    end_value=0.1 * config.learning_rate,
  )
  return optax.chain(
    optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=config.weight_decay)
  )


def init_params(model: T5, seed: int) -> dict:
  """Random parameters (our tree, no outer "params" key) from `PRNGKey(seed)`."""
  ids = jnp.ones((1, 1), jnp.int32)
  return unbox(jax.jit(model.init)(jax.random.PRNGKey(seed), ids, ids, ids, ids))["params"]


def loss_fn(params: dict, batch: dict, model: T5) -> tuple[jax.Array, dict]:
  """Mean teacher-forced cross-entropy over target tokens (EOS included).

  Returns:
    `(loss, {"loss", "token_accuracy"})`.
  """
  logits = model.apply(
    {"params": params},
    batch["input_ids"],
    batch["input_mask"],
    scoring.shift_right(batch["target_ids"]),
    batch["target_mask"],
  )
  mask = batch["target_mask"].astype(jnp.float32)
  lp = scoring.token_log_probs(logits, batch["target_ids"])
  loss = -(lp * mask).sum() / jnp.maximum(mask.sum(), 1.0)
  hit = (jnp.argmax(logits, -1) == batch["target_ids"]) * mask
  return loss, {"loss": loss, "token_accuracy": hit.sum() / jnp.maximum(mask.sum(), 1.0)}


def make_step(model: T5, tx: optax.GradientTransformation) -> Callable:
  @jax.jit
  def step(params, opt_state, batch):
    grads, metrics = jax.grad(functools.partial(loss_fn, model=model), has_aux=True)(params, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, metrics

  return step


@dataclasses.dataclass
class TuneResult:
  """The tuned model: config, numpy params, steps run, digests by step, last logged metrics."""

  model_config: T5Config
  params: dict
  steps: int
  digests: dict[int, str]
  metrics: dict[str, float]


def tune(
  config: TuneConfig,
  vocab: seqio.Vocabulary,
  *,
  num_steps: int | None = None,
  progress: bool = True,
  log_every: int = 100,
  log: Callable[[int, dict], None] | None = None,
  digest_at: Sequence[int] = (),
) -> TuneResult:
  """Instruction-tunes a fresh model.

  Args:
    config: the recipe.
    vocab: the vocabulary from `train_vocabulary` (its size sets the embedding rows).
    num_steps: stop after this many steps (a prefix of the full run, for reproducibility tests);
      the learning-rate schedule is always that of `config.num_steps`.
    progress: tqdm bar.
    log_every / log: `log(step, metrics)` every `log_every` steps.
    digest_at: steps after which to record `params_digest` (reproducibility checks).

  Returns:
    A `TuneResult` (parameters as numpy).
  """
  import tqdm

  model_config = config.model_config(vocab.vocab_size)
  model = T5(model_config)
  tx = make_optimizer(config)
  device = jax.devices("cpu")[0]
  with jax.default_device(device):
    params = init_params(model, config.seed)
    opt_state = tx.init(params)
    step_fn = make_step(model, tx)
    batches = TuningBatches(config, vocab)
    total = config.num_steps if num_steps is None else num_steps
    digests, last = {}, {}
    for step in tqdm.trange(total, desc="instruction tuning", disable=not progress, leave=False):
      params, opt_state, metrics = step_fn(params, opt_state, batches(step))
      # Block every step: queued steps can deadlock XLA's CPU collectives on few cores.
      jax.block_until_ready(params)
      if step + 1 in digest_at:
        digests[step + 1] = params_digest(params)
      if (step + 1) % log_every == 0 or step + 1 == total:
        last = {k: float(v) for k, v in metrics.items()}
        if log is not None:
          log(step + 1, last)
  params = jax.tree.map(np.asarray, jax.device_get(params))
  return TuneResult(model_config, params, total, digests, last)


def params_digest(params: dict) -> str:
  """SHA-256 over every parameter's path, dtype, shape and bytes (bit-identity check)."""
  h = hashlib.sha256()
  for path, leaf in sorted(
    (jax.tree_util.keystr(p), np.asarray(x))
    for p, x in jax.tree_util.tree_flatten_with_path(params)[0]
  ):
    h.update(f"{path}|{leaf.dtype}|{leaf.shape}|".encode())
    h.update(np.ascontiguousarray(leaf).tobytes())
  return h.hexdigest()


def write_vocabulary(config: TuneConfig, path: str | os.PathLike) -> pathlib.Path:
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(train_vocabulary(config))
  return path
