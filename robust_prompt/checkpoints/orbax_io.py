"""Our own checkpoints of model parameters: orbax arrays + `config.json` + `robust_prompt.json`.

Layout of a checkpoint directory:

  params/               orbax PyTree checkpoint of the parameter tree (design.md names)
  config.json           `T5Config.to_json(runtime=False)` or `DecoderConfig.to_json(...)`
                        (architecture and dtypes, no remat policy; the family is the
                        config's: a decoder-only config has a `model_type` key, T5's has none)
  robust_prompt.json    {"format", "version", "vocab": vocabulary spec, "source"}
  spiece.model | tokenizer.json | tokenizer.model   a copy of the vocabulary file (local ones)

The vocabulary file is copied so that the directory is self-contained (a hub snapshot or a
temporary directory it came from may disappear). Restoring onto a mesh reads each array straight
into its sharding (orbax `ArrayRestoreArgs`), so a large model never materialises on one host.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import shutil
from typing import Any

import jax
import numpy as np
import seqio

from robust_prompt import io_utils
from robust_prompt import vocab as vocab_lib
from robust_prompt.model.config import T5Config
from robust_prompt.model.decoder_config import DecoderConfig, is_decoder_config_dict

ModelConfig = T5Config | DecoderConfig

PARAMS_DIR = "params"
CONFIG_NAME = "config.json"
META_NAME = "robust_prompt.json"
FORMAT = "robust_prompt.params"
VERSION = 1


def is_orbax_params_dir(path: str | os.PathLike) -> bool:
  """True for a directory written by `save_params`."""
  p = pathlib.Path(path)
  return (p / META_NAME).is_file() and (p / PARAMS_DIR).is_dir()


def save_params(
  directory: str | os.PathLike,
  params: dict,
  config: ModelConfig,
  vocab: str | os.PathLike | seqio.Vocabulary | None,
  source: str = "",
  overwrite: bool = False,
) -> pathlib.Path:
  """Writes a parameter checkpoint.

  Args:
    directory: output directory (created; must not already hold a checkpoint unless `overwrite`).
    params: nested dict of numpy or jax arrays in our tree (no outer "params" key).
    config: the architecture, written as `config.json`.
    vocab: a vocabulary, a path to one (file or model dir), `"byte"`, or None (none stored).
    source: where the parameters came from (free text, e.g. the `--model` string).
    overwrite: replace an existing checkpoint in `directory`.

  Returns:
    The checkpoint directory.
  """
  import orbax.checkpoint as ocp

  directory = pathlib.Path(directory).expanduser().absolute()
  if (directory / PARAMS_DIR).exists():
    if not overwrite:
      raise FileExistsError(
        f"{directory} already holds a checkpoint ({PARAMS_DIR}/); choose another directory or "
        "pass overwrite=True"
      )
    shutil.rmtree(directory / PARAMS_DIR)
  io_utils.check_writable_dir(directory)

  # Every process takes part in the orbax save (multi-host); only the first writes side files.
  main_process = jax.process_index() == 0
  vocab_spec = None
  if vocab is not None:
    if not isinstance(vocab, seqio.Vocabulary):
      vocab = vocab_lib.load_vocabulary(vocab)
    vocab_spec = _store_vocabulary(vocab, directory, copy=main_process)

  if "params" in params and "token_embedder" not in params:
    params = params["params"]
  checkpointer = ocp.PyTreeCheckpointer()
  checkpointer.save(directory / PARAMS_DIR, params)
  if not main_process:
    return directory
  # Runtime options (the remat policy) are the run's business, not the weights'.
  io_utils.atomic_write_text(directory / CONFIG_NAME, config.to_json(runtime=False))
  io_utils.atomic_write_json(
    directory / META_NAME,
    {
      "format": FORMAT,
      "version": VERSION,
      "vocab": vocab_spec,
      "source": str(source),
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    },
  )
  return directory


def _store_vocabulary(vocab: seqio.Vocabulary, directory: pathlib.Path, copy: bool = True) -> dict:
  """Copies a local vocabulary file into `directory`; returns its spec (path relative)."""
  spec = vocab_lib.vocabulary_spec(vocab)
  path = spec.get("path")
  if path and not str(path).startswith("gs://"):
    src = pathlib.Path(path)
    if spec["kind"] == "decoder":
      name = spec["file"]  # tokenizer.json or tokenizer.model, as the model directory names it
    elif spec["kind"] == "tokenizer_json":
      name = vocab_lib.TOKENIZER_JSON_NAME
    else:
      name = vocab_lib.SPIECE_NAME
    dst = directory / name
    if copy and src.resolve() != dst.resolve():
      shutil.copyfile(src, dst)
    spec = {**spec, "path": name}
  return spec


def read_metadata(directory: str | os.PathLike) -> dict[str, Any]:
  """The contents of `robust_prompt.json` (checked to be one of ours)."""
  path = pathlib.Path(directory) / META_NAME
  try:
    with open(path) as f:
      meta = json.load(f)
  except FileNotFoundError:
    raise FileNotFoundError(
      f"{directory}: not a robust-prompt checkpoint (no {META_NAME}); write one with "
      "`robust-prompt convert`"
    ) from None
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: line {e.lineno}: not valid JSON: {e.msg}") from e
  if meta.get("format") != FORMAT:
    raise ValueError(f"{path}: format is {meta.get('format')!r}, expected {FORMAT!r}")
  if int(meta.get("version", 0)) > VERSION:
    raise ValueError(
      f"{path}: written by a newer robust-prompt (version {meta['version']} > {VERSION}); upgrade"
    )
  return meta


def load_config(directory: str | os.PathLike) -> ModelConfig:
  """The stored architecture: a `DecoderConfig` when it names a decoder-only model type."""
  path = pathlib.Path(directory) / CONFIG_NAME
  try:
    stored = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: line {e.lineno}: not valid JSON: {e.msg}") from e
  if is_decoder_config_dict(stored):
    return DecoderConfig.from_json(path)
  return T5Config.from_json(path)


def load_vocabulary(directory: str | os.PathLike) -> seqio.Vocabulary | None:
  """The vocabulary stored with the checkpoint, or None if it was saved without one."""
  spec = read_metadata(directory).get("vocab")
  if spec is None:
    return None
  return vocab_lib.vocabulary_from_spec(spec, base_dir=directory)


def load_params(
  directory: str | os.PathLike,
  mesh: jax.sharding.Mesh | None = None,
  shardings: dict | None = None,
  rules=None,
) -> dict:
  """Restores the parameter tree.

  Args:
    directory: a checkpoint written by `save_params`.
    mesh: when given (and `shardings` is not), arrays are restored straight into
      `partitioning.param_shardings` for the stored config on this mesh.
    shardings: a tree of `jax.sharding.Sharding` matching the parameters (overrides `mesh`).
    rules: logical-axis rules for `mesh` (default `partitioning.DEFAULT_RULES`).

  Returns:
    Nested dict of numpy arrays (no mesh) or `jax.Array`s laid out in `shardings`.
  """
  import orbax.checkpoint as ocp

  directory = pathlib.Path(directory).expanduser().absolute()
  read_metadata(directory)
  checkpointer = ocp.PyTreeCheckpointer()
  metadata = checkpointer.metadata(directory / PARAMS_DIR).item_metadata
  metadata = getattr(metadata, "tree", metadata)
  if shardings is None and mesh is not None:
    shardings = config_param_shardings(load_config(directory), mesh, rules)
  if shardings is None:
    restore_args = jax.tree.map(lambda m: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
  else:
    _check_same_keys(metadata, shardings, directory)
    restore_args = jax.tree.map(
      lambda m, s: ocp.ArrayRestoreArgs(sharding=s, global_shape=tuple(m.shape), dtype=m.dtype),
      metadata,
      shardings,
    )
  item = jax.tree.map(lambda m: np.zeros((), m.dtype), metadata)
  return checkpointer.restore(
    directory / PARAMS_DIR, args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args)
  )


def config_param_shardings(config: ModelConfig, mesh: jax.sharding.Mesh, rules=None) -> dict:
  """Tree of `NamedSharding`s of the parameters of the config's module on `mesh`.

  The module is `T5(config)` or, for a `DecoderConfig`, `Decoder(config)`.
  """
  from robust_prompt import partitioning

  if isinstance(config, DecoderConfig):
    from robust_prompt.model.decoder import Decoder

    module = Decoder(config)
  else:
    from robust_prompt.model.t5 import T5

    module = T5(config)
  # Relaxed to the real shapes: a dimension the mesh does not divide (e.g. flan-t5-small's 6 heads
  # over model=4) is replicated, as jax requires even tiling.
  return partitioning.model_param_shardings(
    module, mesh, partitioning.DEFAULT_RULES if rules is None else rules
  )


def _check_same_keys(metadata, shardings, directory) -> None:
  def keys(tree):
    return {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]}

  have, want = keys(metadata), keys(shardings)
  if have != want:
    raise ValueError(
      f"{directory}: stored parameters do not match the shardings: only in checkpoint "
      f"{sorted(have - want)[:10]}, only in shardings {sorted(want - have)[:10]}"
    )
