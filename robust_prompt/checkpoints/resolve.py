"""`--model SPEC` -> `LoadedModel(config, params, vocab, source)`.

`SPEC` is, in the order we test for it:

1. one of our orbax checkpoint directories (`robust_prompt.json` + `params/`);
2. a T5X checkpoint directory (`checkpoint_N/` with a legacy `checkpoint` msgpack file, or an
   orbax-based T5X checkpoint), local or `gs://`; needs a `T5Config` and a vocabulary path;
3. a Hugging Face model directory (`config.json` + weights);
4. a Hugging Face hub id (`google/flan-t5-small`), when no such local path exists.

The model family follows the checkpoint: a Hugging Face `config.json` whose `model_type` is
llama / mistral / qwen2 (or one of our checkpoints storing a `DecoderConfig`) loads the
decoder-only family (`DecoderConfig`, the tokenizer beside the weights as a
`vocab.DecoderVocabulary`); everything else is T5. `prompted.for_config(loaded.config)` then
gives the family's `PromptedModel`.

With a mesh, parameters go straight into their shardings (`partitioning.param_shardings`):
our checkpoints are restored shard by shard by orbax, the others are placed from host memory
with `partitioning.place_params` (each device receives only its slice).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import warnings

import seqio

from robust_prompt import partitioning
from robust_prompt import vocab as vocab_lib
from robust_prompt.checkpoints import hf, hf_decoder, orbax_io, t5x
from robust_prompt.model.config import T5Config
from robust_prompt.model.decoder_config import DecoderConfig

ModelConfig = T5Config | DecoderConfig

# Config fields that are not the architecture (they may differ without harm; the passed config's
# win, as they are what the run asked for).
_NON_ARCH_FIELDS = ("dtype", "param_dtype", "remat_policy")


@dataclasses.dataclass
class LoadedModel:
  config: ModelConfig  # the family follows its type (`prompted.for_config`)
  params: dict  # placed on the mesh (jax.Array) or numpy when mesh is None
  vocab: seqio.Vocabulary
  source: str  # what --model said


def detect_kind(spec: str) -> str:
  """Which kind of checkpoint `spec` names: "orbax", "t5x", "hf_dir" or "hub".

  Raises:
    FileNotFoundError: the path does not exist (and is not a hub id), or the directory holds no
      recognised checkpoint (the message lists what it holds and what was expected).
  """
  if spec.startswith("gs://"):
    if t5x.is_t5x_legacy_dir(spec) or t5x.orbax_tree_dir(spec) is not None:
      return "t5x"
    raise FileNotFoundError(
      f"{spec}: no T5X checkpoint there (expected {spec.rstrip('/')}/checkpoint or an orbax "
      "checkpoint); on GCS only T5X checkpoints are read"
    )
  path = pathlib.Path(spec).expanduser()
  if not path.exists():
    if hf.looks_like_hub_id(spec):
      return "hub"
    raise FileNotFoundError(
      f"--model {spec!r}: no such file or directory (and not a Hugging Face hub id 'org/name')"
    )
  if not path.is_dir():
    raise NotADirectoryError(
      f"--model {spec!r} is a file; pass the model directory (a Hugging Face directory, a T5X "
      "checkpoint_N directory or a robust-prompt checkpoint directory)"
    )
  if orbax_io.is_orbax_params_dir(path):
    return "orbax"
  if t5x.is_t5x_legacy_dir(path) or t5x.orbax_tree_dir(path) is not None:
    return "t5x"
  if hf.is_hf_dir(path):
    return "hf_dir"
  raise FileNotFoundError(_unrecognised_dir_message(path))


def _unrecognised_dir_message(path: pathlib.Path) -> str:
  names = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
  steps = sorted(
    (n.rstrip("/") for n in names if re.fullmatch(r"checkpoint_\d+/", n)),
    key=lambda n: int(n.split("_")[1]),
  )
  hint = ""
  if steps:
    hint = f" This looks like a T5X model directory: pass one step, e.g. {path / steps[-1]}."
  elif (path / hf.CONFIG_NAME).is_file():
    hint = f" It has {hf.CONFIG_NAME} but no weights: the download may be incomplete."
  shown = ", ".join(names[:20]) + (f", ... ({len(names) - 20} more)" if len(names) > 20 else "")
  return (
    f"{path}: no recognised checkpoint. Expected one of: a robust-prompt checkpoint "
    f"({orbax_io.META_NAME} + {orbax_io.PARAMS_DIR}/), a T5X checkpoint (a '{t5x.LEGACY_FILE}' "
    f"file or orbax {t5x.ORBAX_MARKERS[0]}), or a Hugging Face directory ({hf.CONFIG_NAME} + "
    f"{' / '.join(hf.WEIGHT_NAMES)}). Found: {shown or 'nothing (empty directory)'}.{hint}"
  )


def _reconcile_config(stored: ModelConfig, passed: ModelConfig | None, spec: str) -> ModelConfig:
  """The checkpoint's own config wins; a differing passed config (e.g. from gin) is reported."""
  if passed is None:
    return stored
  if type(passed) is not type(stored):
    raise ValueError(
      f"{spec} is a {type(stored).__name__} checkpoint, but a {type(passed).__name__} was passed "
      "(a gin model file of the other family?); drop the model gin file or pick a matching one"
    )
  diffs = [
    f"{f.name}: checkpoint {getattr(stored, f.name)!r} vs passed {getattr(passed, f.name)!r}"
    for f in dataclasses.fields(type(stored))
    if f.name not in _NON_ARCH_FIELDS and getattr(stored, f.name) != getattr(passed, f.name)
  ]
  if diffs:
    warnings.warn(
      f"{spec}: the checkpoint stores its own architecture, which differs from the config that "
      f"was passed (using the checkpoint's): {'; '.join(diffs)}",
      stacklevel=3,
    )
  return stored.replace(**{name: getattr(passed, name) for name in _NON_ARCH_FIELDS})


def load_model(
  spec: str | os.PathLike,
  *,
  mesh=None,
  rules=partitioning.DEFAULT_RULES,
  config: ModelConfig | None = None,
  vocab_path: str | os.PathLike | None = None,
  dtype: str | None = None,
) -> LoadedModel:
  """Loads a model for `--model SPEC` (see the module docstring for what SPEC may be).

  Args:
    spec: hub id, HF directory, T5X checkpoint directory or robust-prompt checkpoint directory.
    mesh: place the parameters onto this `Mesh(data, model)`; None returns numpy arrays.
    rules: logical-axis rules used for the parameter shardings.
    config: the architecture; required for T5X checkpoints (from a gin model file). For the other
      kinds the checkpoint's own config is used (a differing one passed here is warned about; one
      of the other family is an error).
    vocab_path: vocabulary (file, model directory or "byte"); overrides the stored one. Required
      for T5X checkpoints. For a decoder-only model, its tokenizer.json / tokenizer.model (with
      the tokenizer_config.json beside it).
    dtype: activation dtype ("float32" / "bfloat16"); parameters stay in `config.param_dtype`.

  Returns:
    A `LoadedModel`.
  """
  spec = os.fspath(spec)
  kind = detect_kind(spec)
  vocab = None
  if kind == "orbax":
    model_config = _reconcile_config(orbax_io.load_config(spec), config, spec)
    if dtype:
      model_config = model_config.replace(dtype=dtype)
    shardings = None if mesh is None else orbax_io.config_param_shardings(model_config, mesh, rules)
    params = orbax_io.load_params(spec, shardings=shardings)
    if model_config.param_dtype != orbax_io.load_config(spec).param_dtype:
      params = _cast_placed(params, model_config)
    if vocab_path is None:
      vocab = orbax_io.load_vocabulary(spec)
  else:
    model_dir = None if kind == "t5x" else hf.resolve_hf_path(spec)
    if model_dir is not None and hf_decoder.is_decoder_dir(model_dir):
      stored, params, model_dir = hf_decoder.load_hf_decoder(
        model_dir, dtype=config.param_dtype if config else None
      )
      model_config = _reconcile_config(stored, config, spec)
      if vocab_path is None:
        vocab = hf_decoder.load_tokenizer(model_dir)
    elif kind == "t5x":
      if isinstance(config, DecoderConfig):
        raise ValueError(f"{spec} is a T5X checkpoint: it needs a T5Config, not a DecoderConfig")
      if config is None:
        raise ValueError(
          f"{spec} is a T5X checkpoint, which does not store the architecture: pass "
          "--gin_file gin_configs/models/<size>.gin (e.g. models/t5_1_1_small.gin) or a T5Config"
        )
      if vocab_path is None:
        raise ValueError(
          f"{spec} is a T5X checkpoint, which does not store its vocabulary: pass --vocab PATH "
          "(e.g. the T5 spiece.model, gs://t5-data/vocabs/cc_all.32000.100extra/sentencepiece.model)"
        )
      model_config = config
      params = t5x.load_t5x(spec, model_config)
    else:
      stored, params, model_dir = hf.load_hf(
        model_dir, dtype=config.param_dtype if config else None
      )
      model_config = _reconcile_config(stored, config, spec)
      if vocab_path is None:
        found = hf.hf_vocab_path(model_dir)
        if found is None:
          raise FileNotFoundError(
            f"{model_dir}: no vocabulary (spiece.model or tokenizer.json) beside the weights; "
            "pass --vocab PATH"
          )
        vocab_path = found
    if dtype:
      model_config = model_config.replace(dtype=dtype)
    if mesh is not None:
      shardings = orbax_io.config_param_shardings(model_config, mesh, rules)
      params = partitioning.place_params(params, shardings)
  if vocab is None:
    if vocab_path is None:
      raise FileNotFoundError(
        f"{spec}: no vocabulary stored with the checkpoint; pass --vocab PATH"
      )
    if isinstance(model_config, DecoderConfig):
      vocab = vocab_lib.load_decoder_vocabulary(vocab_path)
    else:
      vocab = vocab_lib.load_vocabulary(vocab_path)
  if vocab.vocab_size > model_config.vocab_size:
    raise ValueError(
      f"vocabulary {vocab} has {vocab.vocab_size} ids but the model's embedding has only "
      f"{model_config.vocab_size} rows: wrong --vocab for this model?"
    )
  return LoadedModel(config=model_config, params=params, vocab=vocab, source=spec)


def _cast_placed(params, config: ModelConfig):
  import jax

  return jax.tree.map(lambda x: x.astype(config.jnp_param_dtype), params)
