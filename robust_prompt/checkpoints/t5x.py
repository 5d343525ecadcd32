"""T5X checkpoints -> our parameter tree (T5X names are ours, so no renaming is needed).

Two on-disk formats are read:

* Legacy T5X (`checkpoint_N/checkpoint`): one msgpack file holding `{"version", "optimizer":
  {"target": params, "state": optimizer state}}`. Small arrays are inline (flax's msgpack ndarray
  extension); each large array is a TensorStore spec pointing to a zarr directory beside the file
  (`target.encoder.layers_0.attention.query.kernel/`). Local paths and `gs://` are both read
  through tensorstore.
* Orbax-based T5X: a directory written by orbax's PyTree checkpointer (`_METADATA`, ...), directly
  or in a `state/` sub-directory, whose tree is `{"target": params, "state": ...}`.

In both, only `target` is read: the optimizer state (Adafactor factored moments) is skipped. A T5X
checkpoint holds no architecture, so the caller passes a `T5Config` (from a gin model file) and the
loaded tree is checked against the shapes that config implies.
"""

from __future__ import annotations

import os
import pathlib

import jax
import msgpack
import numpy as np
from tqdm.auto import tqdm

from robust_prompt.model.config import T5Config

LEGACY_FILE = "checkpoint"
ORBAX_MARKERS = ("_METADATA", "_CHECKPOINT_METADATA", "manifest.ocdbt")
# flax.serialization's msgpack extension codes.
_EXT_NDARRAY = 1
_EXT_NATIVE_COMPLEX = 2
_EXT_NPSCALAR = 3


class _PackedArray:
  """An inline array from the msgpack file, decoded only if it is part of `target`."""

  __slots__ = ("code", "data")

  def __init__(self, code: int, data: bytes):
    self.code, self.data = code, data

  def decode(self) -> np.ndarray:
    if self.code == _EXT_NDARRAY:
      shape, dtype_name, buffer = msgpack.unpackb(self.data, raw=False)
      return np.frombuffer(buffer, dtype=_np_dtype(dtype_name)).reshape(shape).copy()
    if self.code == _EXT_NPSCALAR:
      dtype_name, buffer = msgpack.unpackb(self.data, raw=False)
      return np.frombuffer(buffer, dtype=_np_dtype(dtype_name))[0]
    raise ValueError(f"unsupported msgpack extension code {self.code} in a T5X checkpoint")


def _np_dtype(name: str) -> np.dtype:
  if name == "bfloat16":
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)
  return np.dtype(name)


def is_t5x_legacy_dir(path: str | os.PathLike) -> bool:
  return _join(str(path), LEGACY_FILE, is_file=True)


def orbax_tree_dir(path: str | os.PathLike) -> str | None:
  """The orbax PyTree directory of an orbax-based T5X checkpoint (itself or `state/`), or None."""
  path = str(path)
  for candidate in (path, path.rstrip("/") + "/state"):
    if any(_join(candidate, m, is_file=True) for m in ORBAX_MARKERS):
      return candidate
  return None


def _join(directory: str, name: str, is_file: bool = False) -> bool:
  full = directory.rstrip("/") + "/" + name
  if directory.startswith("gs://"):
    import tensorflow as tf

    return tf.io.gfile.exists(full)
  return os.path.isfile(full) if is_file else os.path.exists(full)


def _read_bytes(path: str) -> bytes:
  if path.startswith("gs://"):
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "rb") as f:
      return f.read()
  with open(path, "rb") as f:
    return f.read()


def _is_tensorstore_spec(node) -> bool:
  return isinstance(node, dict) and "driver" in node and ("kvstore" in node or "path" in node)


def _kvstore(checkpoint_dir: str, spec: dict) -> dict:
  """Points a T5X TensorStore spec at the array directory inside `checkpoint_dir`.

  T5X writes paths relative to the checkpoint directory (driver "gfile"); like T5X, we rebase
  them onto the directory the checkpoint is read from (it may have been copied elsewhere).
  """
  kv = spec.get("kvstore")
  rel = kv.get("path") if isinstance(kv, dict) else spec.get("path")
  if not rel:
    raise ValueError(f"T5X TensorStore spec without a path: {spec}")
  name = rel.rstrip("/").rsplit("/", 1)[-1]
  full = checkpoint_dir.rstrip("/") + "/" + name
  if full.startswith("gs://"):
    bucket, _, blob = full[len("gs://") :].partition("/")
    return {"driver": "gcs", "bucket": bucket, "path": blob}
  return {"driver": "file", "path": full}


def _read_tensorstore(checkpoint_dir: str, spec: dict, key: str) -> np.ndarray:
  import tensorstore as ts

  ts_spec = {"driver": spec.get("driver", "zarr"), "kvstore": _kvstore(checkpoint_dir, spec)}
  try:
    store = ts.open(ts_spec, open=True, read=True).result()
    return np.asarray(store.read().result())
  except Exception as e:  # tensorstore raises ValueError / its own errors for missing chunks.
    raise ValueError(
      f"T5X checkpoint {checkpoint_dir}: cannot read array {key!r} from {ts_spec['kvstore']} ({e})"
    ) from e


def _flatten(tree, prefix: str = "") -> dict[str, object]:
  out = {}
  for k, v in tree.items():
    key = f"{prefix}/{k}" if prefix else str(k)
    if isinstance(v, dict) and not _is_tensorstore_spec(v):
      out.update(_flatten(v, key))
    else:
      out[key] = v
  return out


def _unflatten(flat: dict[str, np.ndarray]) -> dict:
  tree: dict = {}
  for key, value in flat.items():
    node = tree
    *parents, leaf = key.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def read_t5x_legacy(checkpoint_dir: str | os.PathLike) -> dict:
  """Reads the `target` (parameters) of a legacy T5X checkpoint as a nested dict of numpy arrays."""
  checkpoint_dir = str(checkpoint_dir)
  raw = _read_bytes(checkpoint_dir.rstrip("/") + "/" + LEGACY_FILE)
  try:
    state = msgpack.unpackb(raw, ext_hook=_PackedArray, raw=False, strict_map_key=False)
  except (ValueError, msgpack.exceptions.ExtraData) as e:
    raise ValueError(f"{checkpoint_dir}/{LEGACY_FILE}: not a T5X msgpack checkpoint ({e})") from e
  root = state.get("optimizer", state) if isinstance(state, dict) else None
  if not isinstance(root, dict) or "target" not in root:
    keys = sorted(state) if isinstance(state, dict) else type(state).__name__
    raise ValueError(
      f"{checkpoint_dir}/{LEGACY_FILE}: no 'optimizer/target' parameter tree (top-level keys: {keys})"
    )
  flat = _flatten(root["target"])
  out = {}
  for key, node in tqdm(flat.items(), desc="reading T5X arrays", unit="array", leave=False):
    if isinstance(node, _PackedArray):
      out[key] = node.decode()
    elif _is_tensorstore_spec(node):
      out[key] = _read_tensorstore(checkpoint_dir, node, key)
    else:
      out[key] = np.asarray(node)
  return _unflatten(out)


def read_t5x_orbax(checkpoint_dir: str | os.PathLike) -> dict:
  """Reads `target` of an orbax-based T5X checkpoint (optimizer state is not restored)."""
  import orbax.checkpoint as ocp

  tree_dir = orbax_tree_dir(checkpoint_dir)
  if tree_dir is None:
    raise FileNotFoundError(f"{checkpoint_dir}: not an orbax checkpoint (no {ORBAX_MARKERS[0]})")
  checkpointer = ocp.PyTreeCheckpointer()
  metadata = checkpointer.metadata(tree_dir).item_metadata
  metadata = getattr(metadata, "tree", metadata)
  if "target" not in metadata:
    raise ValueError(
      f"{tree_dir}: orbax tree has no 'target' (top-level keys: {sorted(metadata)}); expected a "
      "T5X train state {'target': params, 'state': optimizer state}"
    )
  target_meta = metadata["target"]
  item = {"target": jax.tree.map(lambda m: np.zeros((), m.dtype), target_meta)}
  restore_args = {
    "target": jax.tree.map(lambda m: ocp.RestoreArgs(restore_type=np.ndarray), target_meta)
  }
  restored = checkpointer.restore(
    tree_dir,
    args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args, partial_restore=True),
  )
  return jax.tree.map(np.asarray, restored["target"])


def expected_param_shapes(config: T5Config) -> dict[str, tuple[int, ...]]:
  """Flat `{"encoder/layers_0/...": shape}` of the parameters `config` implies (no allocation)."""
  from robust_prompt import partitioning
  from robust_prompt.model.t5 import T5

  params = partitioning.unbox(partitioning.abstract_variables(T5(config)))["params"]
  return {k: tuple(v.shape) for k, v in _flatten(params).items()}


def check_against_config(params: dict, config: T5Config, source: str) -> None:
  """Raises `CheckpointMismatchError` naming every missing/unexpected key and shape mismatch."""
  from robust_prompt.checkpoints.hf_names import CheckpointMismatchError

  expected = expected_param_shapes(config)
  got = {k: tuple(np.shape(v)) for k, v in _flatten(params).items()}
  problems = []
  for key in sorted(set(expected) - set(got)):
    problems.append(f"missing parameter {key!r} (expected shape {expected[key]})")
  for key in sorted(set(got) - set(expected)):
    problems.append(f"unexpected parameter {key!r} with shape {got[key]}")
  for key in sorted(set(got) & set(expected)):
    if got[key] != expected[key]:
      problems.append(
        f"parameter {key!r}: checkpoint shape {got[key]} != shape {expected[key]} from the config"
      )
  if problems:
    raise CheckpointMismatchError(
      f"T5X checkpoint {source} does not match the model config ({len(problems)} problems; check "
      "the --gin_file model size):\n  " + "\n  ".join(problems)
    )


def load_t5x(checkpoint_dir: str | os.PathLike, config: T5Config, dtype=None) -> dict:
  """Loads a T5X checkpoint (either format) and checks it against `config`.

  Args:
    checkpoint_dir: `.../checkpoint_N` (local or `gs://`).
    config: the architecture (T5X checkpoints do not store it).
    dtype: parameter dtype of the result (default `config.param_dtype`).

  Returns:
    Nested dict of numpy arrays in our parameter tree.
  """
  from robust_prompt.checkpoints.hf import upcast_tree

  source = str(checkpoint_dir)
  if isinstance(checkpoint_dir, pathlib.Path) or not source.startswith("gs://"):
    source = str(pathlib.Path(source).expanduser())
  if is_t5x_legacy_dir(source):
    params = read_t5x_legacy(source)
  elif orbax_tree_dir(source) is not None:
    params = read_t5x_orbax(source)
  else:
    raise FileNotFoundError(
      f"{source}: not a T5X checkpoint (expected a '{LEGACY_FILE}' msgpack file or an orbax "
      f"checkpoint with {ORBAX_MARKERS[0]})"
    )
  check_against_config(params, config, source)
  return upcast_tree(params, dtype or config.param_dtype)
