"""Hugging Face T5 checkpoints (a local directory or a hub id) -> `(T5Config, param tree)`.

The directory, hub and weight readers here serve the decoder-only family too
(`checkpoints/hf_decoder.py` maps its names).

A model directory holds `config.json`, weights as `model.safetensors` (or shards listed in
`model.safetensors.index.json`) or `pytorch_model.bin` (or shards listed in
`pytorch_model.bin.index.json`), and a vocabulary (`spiece.model` / `tokenizer.json`). Hub ids are
fetched with `huggingface_hub.snapshot_download`, limited to those files.

safetensors files are read with a small reader of our own (header + memory map) because the
`safetensors` numpy backend cannot represent bfloat16; `ml_dtypes` (a jax dependency) can.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import struct

import ml_dtypes
import numpy as np
from tqdm.auto import tqdm

from robust_prompt import vocab as vocab_lib
from robust_prompt.checkpoints import hf_names
from robust_prompt.model.config import T5Config

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX_NAME = "model.safetensors.index.json"
PYTORCH_NAME = "pytorch_model.bin"
PYTORCH_INDEX_NAME = "pytorch_model.bin.index.json"
WEIGHT_NAMES = (SAFETENSORS_NAME, SAFETENSORS_INDEX_NAME, PYTORCH_NAME, PYTORCH_INDEX_NAME)
VOCAB_FILES = (
  "spiece.model",
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  # Decoder-only models: LLaMA 1/2's SentencePiece file, chat templates (transformers >= 5).
  "tokenizer.model",
  "chat_template.jinja",
  "chat_template.json",
)

# Files fetched from the hub: safetensors first; PyTorch pickles only when a repo has no safetensors.
HUB_PATTERNS_SAFETENSORS = [CONFIG_NAME, "*.safetensors", SAFETENSORS_INDEX_NAME, *VOCAB_FILES]
HUB_PATTERNS_PYTORCH = [CONFIG_NAME, "pytorch_model*.bin", PYTORCH_INDEX_NAME, *VOCAB_FILES]

_SAFETENSORS_DTYPES = {
  "F64": np.float64,
  "F32": np.float32,
  "F16": np.float16,
  "BF16": ml_dtypes.bfloat16,
  "I64": np.int64,
  "I32": np.int32,
  "I16": np.int16,
  "I8": np.int8,
  "U8": np.uint8,
  "BOOL": np.bool_,
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class HubDownloadError(FileNotFoundError):
  """A hub id could not be fetched (offline and not cached, unknown repo, no network)."""


def is_hf_dir(path: str | os.PathLike) -> bool:
  """True when `path` is a directory with `config.json` and a known weights file."""
  p = pathlib.Path(path)
  return (p / CONFIG_NAME).is_file() and any((p / n).is_file() for n in WEIGHT_NAMES)


def looks_like_hub_id(spec: str) -> bool:
  """`org/name` that is not an existing local path (hub ids have exactly one slash)."""
  return bool(_HUB_ID.match(spec)) and not os.path.exists(spec)


def hub_cache_dir() -> str:
  """The hub cache, read from the environment now (huggingface_hub reads it once at import)."""
  if os.environ.get("HF_HUB_CACHE"):
    return os.path.expanduser(os.environ["HF_HUB_CACHE"])
  home = os.environ.get("HF_HOME") or os.path.join(
    os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface"
  )
  return os.path.join(os.path.expanduser(home), "hub")


def hub_offline() -> bool:
  value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
  return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def download_from_hub(repo_id: str, revision: str | None = None) -> pathlib.Path:
  """Fetches (or finds in the cache) the files of a model on the hub; returns the snapshot dir.

  Respects `HF_HOME` / `HF_HUB_CACHE` and `HF_HUB_OFFLINE` (then only the cache is used).

  Raises:
    HubDownloadError: naming the id, the cache directory and what to do.
  """
  import huggingface_hub
  from huggingface_hub import errors as hf_errors

  cache_dir = hub_cache_dir()
  offline = hub_offline()
  last_error: Exception | None = None
  for patterns in (HUB_PATTERNS_SAFETENSORS, HUB_PATTERNS_PYTORCH):
    try:
      path = huggingface_hub.snapshot_download(
        repo_id,
        revision=revision,
        cache_dir=cache_dir,
        allow_patterns=patterns,
        local_files_only=offline,
      )
    except (
      hf_errors.RepositoryNotFoundError,
      hf_errors.GatedRepoError,
      hf_errors.HFValidationError,
    ) as e:
      raise HubDownloadError(
        f"Hugging Face hub id {repo_id!r}: repository not found or not accessible ({e}). Check the "
        "id, or log in (`hf auth login`) for gated/private models, or pass a local directory."
      ) from e
    except (hf_errors.LocalEntryNotFoundError, OSError) as e:
      last_error = e
      continue
    if is_hf_dir(path):
      return pathlib.Path(path)
  where = (
    "HF_HUB_OFFLINE is set, so only the local cache was searched"
    if offline
    else ("the hub could not be reached or the repository has no weights")
  )
  raise HubDownloadError(
    f"could not load Hugging Face model {repo_id!r}: {where}, and the cache {cache_dir} has no "
    f"complete copy (needs {CONFIG_NAME} and {SAFETENSORS_NAME} or {PYTORCH_NAME}). To fix: run "
    f"once with network access (unset HF_HUB_OFFLINE), e.g. `hf download {repo_id}`, or point "
    f"HF_HOME at a cache that holds it, or pass a local model directory (no local directory "
    f"{repo_id!r} exists)." + (f" (last error: {last_error})" if last_error else "")
  ) from last_error


def resolve_hf_path(spec: str | os.PathLike) -> pathlib.Path:
  """A local HF directory as is, or the hub snapshot directory for a hub id."""
  p = pathlib.Path(spec).expanduser()
  if p.is_dir():
    if not is_hf_dir(p):
      raise FileNotFoundError(
        f"{p}: not a Hugging Face model directory (expected {CONFIG_NAME} and one of "
        f"{', '.join(WEIGHT_NAMES)}; found {sorted(x.name for x in p.iterdir())[:20]})"
      )
    return p
  if looks_like_hub_id(str(spec)):
    return download_from_hub(str(spec))
  raise FileNotFoundError(f"{spec}: no such directory, and not a hub id of the form 'org/name'")


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads one `.safetensors` file into numpy arrays (memory-mapped, bfloat16 via ml_dtypes)."""
  path = str(path)
  size = os.path.getsize(path)
  hint = "the file is damaged or its download was cut off: download it again"
  with open(path, "rb") as f:
    head = f.read(8)
    if len(head) < 8:
      raise ValueError(f"{path}: not a safetensors file ({size} bytes); {hint}")
    (header_len,) = struct.unpack("<Q", head)
    if header_len > size - 8:
      raise ValueError(f"{path}: corrupt safetensors header (length {header_len}); {hint}")
    try:
      header = json.loads(f.read(header_len))
    except ValueError as e:
      raise ValueError(f"{path}: corrupt safetensors header ({e}); {hint}") from e
  data_size = size - 8 - header_len
  data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_len) if data_size else b""
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    if info["dtype"] not in _SAFETENSORS_DTYPES:
      raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
    start, end = info["data_offsets"]
    if end > data_size:
      raise ValueError(
        f"{path}: tensor {name!r} ends at byte {end} of the data but the file holds {data_size} "
        f"(truncated); {hint}"
      )
    dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]])
    out[name] = data[start:end].view(dtype).reshape(info["shape"])
  return out


def read_pytorch_bin(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a `pytorch_model.bin` (a torch pickle; needs torch) into float32/int numpy arrays."""
  try:
    import torch
  except ImportError as e:
    raise ImportError(
      f"{path} is a PyTorch pickle and reading it needs torch (pip install torch), or convert the "
      "model to safetensors"
    ) from e
  sd = torch.load(str(path), map_location="cpu", weights_only=True)
  out = {}
  for k, v in sd.items():
    if v.dtype == torch.bfloat16:
      out[k] = v.float().numpy().astype(ml_dtypes.bfloat16)
    else:
      out[k] = v.numpy()
  return out


def _shard_files(model_dir: pathlib.Path, index_name: str) -> list[pathlib.Path]:
  index_path = model_dir / index_name
  with open(index_path) as f:
    weight_map = json.load(f).get("weight_map")
  if not weight_map:
    raise ValueError(f"{index_path}: no 'weight_map' in the shard index")
  files = sorted(set(weight_map.values()))
  missing = [n for n in files if not (model_dir / n).is_file()]
  if missing:
    raise FileNotFoundError(f"{index_path} lists shards that are missing: {missing}")
  return [model_dir / n for n in files]


def read_hf_state_dict(model_dir: str | os.PathLike) -> dict[str, np.ndarray]:
  """All tensors of an HF model directory, whichever of the four weight layouts it uses."""
  model_dir = pathlib.Path(model_dir)
  if (model_dir / SAFETENSORS_NAME).is_file():
    files, reader = [model_dir / SAFETENSORS_NAME], read_safetensors
  elif (model_dir / SAFETENSORS_INDEX_NAME).is_file():
    files, reader = _shard_files(model_dir, SAFETENSORS_INDEX_NAME), read_safetensors
  elif (model_dir / PYTORCH_NAME).is_file():
    files, reader = [model_dir / PYTORCH_NAME], read_pytorch_bin
  elif (model_dir / PYTORCH_INDEX_NAME).is_file():
    files, reader = _shard_files(model_dir, PYTORCH_INDEX_NAME), read_pytorch_bin
  else:
    raise FileNotFoundError(
      f"{model_dir}: no weights found (expected one of {', '.join(WEIGHT_NAMES)})"
    )
  state_dict: dict[str, np.ndarray] = {}
  for path in tqdm(files, desc="reading weights", unit="file", disable=len(files) < 2):
    state_dict.update(reader(path))
  return state_dict


def upcast_tree(tree, dtype) -> dict:
  """Casts every floating array of a nested dict to `dtype` (bf16/fp16 checkpoints -> float32)."""
  import jax.numpy as jnp

  dtype = jnp.dtype(dtype)  # also understands "bfloat16"

  def cast(x):
    x = np.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.floating) and x.dtype != dtype:
      return np.ascontiguousarray(x.astype(dtype))
    return x

  return _map_tree(cast, tree)


def _map_tree(fn, tree):
  if isinstance(tree, dict):
    return {k: _map_tree(fn, v) for k, v in tree.items()}
  return fn(tree)


def read_hf_config(model_dir: str | os.PathLike) -> T5Config:
  path = pathlib.Path(model_dir) / CONFIG_NAME
  with open(path) as f:
    try:
      config_dict = json.load(f)
    except ValueError as e:
      raise ValueError(f"{path}: not valid JSON ({e})") from e
  return T5Config.from_hf_dict(config_dict)


def load_hf(spec: str | os.PathLike, dtype=None) -> tuple[T5Config, dict, pathlib.Path]:
  """Loads an HF T5 checkpoint (directory or hub id).

  Args:
    spec: a local model directory or a hub id such as `google/flan-t5-small`.
    dtype: parameter dtype of the returned arrays (default: the config's `param_dtype`).

  Returns:
    `(config, params, model_dir)`: params is a nested dict of numpy arrays in our tree (design.md);
    model_dir is where the files are (the hub snapshot for an id), for the vocabulary.
  """
  model_dir = resolve_hf_path(spec)
  config = read_hf_config(model_dir)
  state_dict = read_hf_state_dict(model_dir)
  params = hf_names.hf_state_dict_to_tree(state_dict, config)
  return config, upcast_tree(params, dtype or config.param_dtype), model_dir


def hf_vocab_path(model_dir: pathlib.Path) -> str | None:
  """The vocabulary of a model directory: spiece.model (preferred), tokenizer.json, "byte" for
  ByT5 (whose tokenizer is rule-based and has no file), or None."""
  for name in ("spiece.model", "tokenizer.json"):
    if (model_dir / name).is_file():
      return str(model_dir / name)
  tokenizer_config = model_dir / "tokenizer_config.json"
  if tokenizer_config.is_file():
    try:
      tokenizer_class = json.loads(tokenizer_config.read_text()).get("tokenizer_class")
    except ValueError:
      tokenizer_class = None
    if tokenizer_class == "ByT5Tokenizer":
      return vocab_lib.BYTE_SPEC
  return None
