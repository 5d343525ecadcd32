"""Hugging Face decoder-only checkpoints (llama, mistral, qwen2) -> `(DecoderConfig, param tree)`.

Weights are read with `hf.read_hf_state_dict` (safetensors, sharded with an index, or
`pytorch_model.bin`); names map one-to-one onto `model/decoder.py`'s tree (HF `nn.Linear` weights
are [out, in], our kernels [in, out], so kernels are transposed). The tokenizer beside the weights
is `tokenizer.json` when there is one (what `AutoTokenizer` loads), else SentencePiece's
`tokenizer.model` (LLaMA 1/2 conversions), with `tokenizer_config.json`'s special tokens.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from robust_prompt import vocab as vocab_lib
from robust_prompt.checkpoints import hf
from robust_prompt.checkpoints.hf_names import CheckpointMismatchError, LayoutEntry, norm_scale
from robust_prompt.model.decoder_config import MODEL_TYPES, DecoderConfig

logger = logging.getLogger(__name__)

# Buffers some checkpoints carry that are not parameters (rotary frequencies are recomputed).
_IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)


def read_config_dict(model_dir: str | os.PathLike) -> dict[str, Any]:
  """The parsed `config.json` of a model directory."""
  path = pathlib.Path(model_dir) / hf.CONFIG_NAME
  with open(path) as f:
    try:
      return json.load(f)
    except ValueError as e:
      raise ValueError(f"{path}: not valid JSON ({e})") from e


def is_decoder_dir(model_dir: str | os.PathLike) -> bool:
  """True when the directory's `config.json` names a decoder-only model type we support."""
  return read_config_dict(model_dir).get("model_type") in MODEL_TYPES


def param_layout(config: DecoderConfig) -> Iterator[LayoutEntry]:
  """Yields (hf_name, tree_path, transpose, tree_shape) for every parameter of the tree."""
  h, v, f = config.d_model, config.vocab_size, config.d_ff
  q_width = config.num_heads * config.head_dim
  kv_width = config.num_kv_heads * config.head_dim
  yield "model.embed_tokens.weight", ("token_embedder", "embedding"), False, (v, h)
  for i in range(config.num_layers):
    hf_layer, path = f"model.layers.{i}", (f"layers_{i}",)
    yield norm_scale(f"{hf_layer}.input_layernorm", (*path, "pre_attention_layer_norm"), h)
    attn = (*path, "attention")
    for ours, theirs, width in (
      ("query", "q_proj", q_width),
      ("key", "k_proj", kv_width),
      ("value", "v_proj", kv_width),
    ):
      yield f"{hf_layer}.self_attn.{theirs}.weight", (*attn, ours, "kernel"), True, (h, width)
      if config.attention_bias:
        yield f"{hf_layer}.self_attn.{theirs}.bias", (*attn, ours, "bias"), False, (width,)
    yield f"{hf_layer}.self_attn.o_proj.weight", (*attn, "out", "kernel"), True, (q_width, h)
    if config.attention_out_bias:
      yield f"{hf_layer}.self_attn.o_proj.bias", (*attn, "out", "bias"), False, (h,)
    yield norm_scale(f"{hf_layer}.post_attention_layernorm", (*path, "pre_mlp_layer_norm"), h)
    mlp = (*path, "mlp")
    yield f"{hf_layer}.mlp.gate_proj.weight", (*mlp, "wi_0", "kernel"), True, (h, f)
    yield f"{hf_layer}.mlp.up_proj.weight", (*mlp, "wi_1", "kernel"), True, (h, f)
    yield f"{hf_layer}.mlp.down_proj.weight", (*mlp, "wo", "kernel"), True, (f, h)
  yield norm_scale("model.norm", ("decoder_norm",), h)
  if not config.tie_word_embeddings:
    yield "lm_head.weight", ("logits_dense", "kernel"), True, (h, v)


def hf_state_dict_to_tree(
  sd: Mapping[str, Any], config: DecoderConfig, *, strict: bool = True
) -> dict[str, Any]:
  """Converts a HF `{Llama,Mistral,Qwen2}ForCausalLM` state dict into our parameter tree.

  Args:
    sd: HF name -> array (numpy, PyTorch layout).
    config: the architecture the tree is for.
    strict: raise on keys that are not part of the architecture.

  Returns:
    Nested dict of numpy arrays (the checkpoint's dtype; the caller casts), no "params" key.

  Raises:
    CheckpointMismatchError: missing keys, wrong shapes, or (strict) unexpected keys.
  """
  tree: dict[str, Any] = {}
  used: set[str] = set()
  missing: list[str] = []
  wrong: list[str] = []
  for hf_name, path, transpose, shape in param_layout(config):
    if hf_name not in sd:
      expected = tuple(reversed(shape)) if transpose else shape
      hint = ""
      if hf_name == "lm_head.weight":
        hint = " (a tied checkpoint? config.json should then say tie_word_embeddings: true)"
      missing.append(f"{hf_name} (expected shape {expected}){hint}")
      continue
    used.add(hf_name)
    arr = np.asarray(sd[hf_name])
    if transpose:
      arr = arr.T
    if tuple(arr.shape) != tuple(shape):
      theirs = tuple(reversed(arr.shape)) if transpose else tuple(arr.shape)
      ours = tuple(reversed(shape)) if transpose else tuple(shape)
      wrong.append(f"{hf_name}: checkpoint has {theirs}, config expects {ours}")
      continue
    node = tree
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = arr
  if config.tie_word_embeddings and "lm_head.weight" in sd:
    # Some tied checkpoints also store the (identical) output layer.
    used.add("lm_head.weight")
    embed = sd.get("model.embed_tokens.weight")
    if embed is not None and not np.array_equal(np.asarray(sd["lm_head.weight"]), embed):
      wrong.append(
        "lm_head.weight differs from model.embed_tokens.weight, but config.json ties them "
        "(tie_word_embeddings: true)"
      )
  unexpected = sorted(k for k in sd if k not in used and not k.endswith(_IGNORED_SUFFIXES))
  if missing or wrong or (strict and unexpected):
    lines = [f"HF {config.model_type} checkpoint does not match its config:"]
    lines += [f"  missing: {m}" for m in missing]
    lines += [f"  wrong shape: {w}" for w in wrong]
    if unexpected:
      more = f" (+{len(unexpected) - 20} more)" if len(unexpected) > 20 else ""
      lines.append(f"  unexpected keys: {', '.join(unexpected[:20])}{more}")
    raise CheckpointMismatchError("\n".join(lines))
  return tree


def tree_to_hf_state_dict(tree: Mapping[str, Any], config: DecoderConfig) -> dict[str, np.ndarray]:
  """Our parameter tree -> a HF `*ForCausalLM` state dict (PyTorch layout)."""
  if "params" in tree and "token_embedder" not in tree:
    tree = tree["params"]
  sd: dict[str, np.ndarray] = {}
  for hf_name, path, transpose, shape in param_layout(config):
    node: Any = tree
    for key in path:
      if not isinstance(node, Mapping) or key not in node:
        raise CheckpointMismatchError(f"parameter tree lacks {'/'.join(path)}")
      node = node[key]
    arr = np.asarray(node)
    if tuple(arr.shape) != tuple(shape):
      raise CheckpointMismatchError(
        f"{'/'.join(path)}: tree has {tuple(arr.shape)}, config expects {tuple(shape)}"
      )
    sd[hf_name] = np.ascontiguousarray(arr.T) if transpose else arr
  return sd


def load_hf_decoder(
  spec: str | os.PathLike, dtype: str | None = None
) -> tuple[DecoderConfig, dict, pathlib.Path]:
  """Loads a HF decoder-only checkpoint (directory or hub id).

  Args:
    spec: a local model directory or a hub id such as `Qwen/Qwen2.5-0.5B-Instruct`.
    dtype: parameter dtype of the returned arrays (default: the config's `param_dtype`).

  Returns:
    `(config, params, model_dir)`: params is a nested dict of numpy arrays in our tree.
  """
  model_dir = hf.resolve_hf_path(spec)
  config = DecoderConfig.from_hf_dict(read_config_dict(model_dir))
  if dtype:
    config = config.replace(param_dtype=dtype)
  state_dict = hf.read_hf_state_dict(model_dir)
  params = hf_state_dict_to_tree(state_dict, config)
  return config, hf.upcast_tree(params, config.param_dtype), model_dir


def tokenizer_path(model_dir: str | os.PathLike) -> pathlib.Path | None:
  """The tokenizer file of a model directory: `tokenizer.json`, else `tokenizer.model`, or None.

  `tokenizer.json` wins when both exist, as with `AutoTokenizer` (the fast tokenizer).
  """
  model_dir = pathlib.Path(model_dir)
  for name in (vocab_lib.TOKENIZER_JSON_NAME, vocab_lib.SENTENCEPIECE_TOKENIZER_NAME):
    if (model_dir / name).is_file():
      return model_dir / name
  return None


def load_tokenizer(model_dir: str | os.PathLike) -> vocab_lib.DecoderVocabulary:
  """The model directory's tokenizer (with its `tokenizer_config.json`); logs which file.

  Raises:
    FileNotFoundError: neither tokenizer.json nor tokenizer.model is there.
  """
  path = tokenizer_path(model_dir)
  if path is None:
    raise FileNotFoundError(
      f"{model_dir}: no tokenizer (tokenizer.json or tokenizer.model) beside the weights; pass "
      "--vocab PATH"
    )
  logger.info("decoder-only model %s: tokenizer %s", model_dir, path)
  return vocab_lib.load_decoder_vocabulary(path)
