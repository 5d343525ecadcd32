"""Pure mapping between Hugging Face T5 state dicts (PyTorch layout) and our parameter tree.

HF `nn.Linear` weights are [out, in]; our kernels are [in, out], so every kernel is transposed.
HF's `relative_attention_bias.weight` is [buckets, N]; our `rel_embedding` is [N, buckets].
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from robust_prompt.model.config import T5Config

# Keys that are copies of `shared.weight` (tied) in HF state dicts; accepted and ignored.
_EMBED_ALIASES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


# A layout entry: (HF name, our tree path, transpose, our shape).
LayoutEntry = tuple[str, tuple[str, ...], bool, tuple[int, ...]]


class CheckpointMismatchError(ValueError):
  """A checkpoint does not match the model configuration (missing/unexpected keys, shapes)."""


def norm_scale(hf_name: str, path: tuple[str, ...], width: int) -> LayoutEntry:
  """The entry of a layer norm's `scale` `[width]`: HF's `<hf_name>.weight`, not transposed."""
  return f"{hf_name}.weight", (*path, "scale"), False, (width,)


def param_layout(config: T5Config) -> Iterator[LayoutEntry]:
  """Yields (hf_name, tree_path, transpose, tree_shape) for every parameter of the tree."""
  h, n, d, f, v = config.d_model, config.num_heads, config.head_dim, config.d_ff, config.vocab_size
  nb = config.relative_attention_num_buckets
  yield "shared.weight", ("token_embedder", "embedding"), False, (v, h)

  def attention(hf: str, path: tuple[str, ...]):
    for ours, theirs in (("query", "q"), ("key", "k"), ("value", "v")):
      yield f"{hf}.{theirs}.weight", (*path, ours, "kernel"), True, (h, n * d)
    yield f"{hf}.o.weight", (*path, "out", "kernel"), True, (n * d, h)

  def mlp(hf: str, path: tuple[str, ...]):
    wis = ("wi_0", "wi_1") if config.is_gated else ("wi",)
    for wi in wis:
      yield f"{hf}.{wi}.weight", (*path, "mlp", wi, "kernel"), True, (h, f)
    yield f"{hf}.wo.weight", (*path, "mlp", "wo", "kernel"), True, (f, h)

  for stack, num_layers in (
    ("encoder", config.num_encoder_layers),
    ("decoder", config.num_decoder_layers),
  ):
    self_attn = "SelfAttention"
    yield (
      f"{stack}.block.0.layer.0.{self_attn}.relative_attention_bias.weight",
      (stack, "relpos_bias", "rel_embedding"),
      True,
      (n, nb),
    )
    for i in range(num_layers):
      blk, path = f"{stack}.block.{i}.layer", (stack, f"layers_{i}")
      if stack == "encoder":
        yield norm_scale(f"{blk}.0.layer_norm", (*path, "pre_attention_layer_norm"), h)
        yield from attention(f"{blk}.0.SelfAttention", (*path, "attention"))
        yield norm_scale(f"{blk}.1.layer_norm", (*path, "pre_mlp_layer_norm"), h)
        yield from mlp(f"{blk}.1.DenseReluDense", path)
      else:
        yield norm_scale(f"{blk}.0.layer_norm", (*path, "pre_self_attention_layer_norm"), h)
        yield from attention(f"{blk}.0.SelfAttention", (*path, "self_attention"))
        yield norm_scale(f"{blk}.1.layer_norm", (*path, "pre_cross_attention_layer_norm"), h)
        yield from attention(f"{blk}.1.EncDecAttention", (*path, "encoder_decoder_attention"))
        yield norm_scale(f"{blk}.2.layer_norm", (*path, "pre_mlp_layer_norm"), h)
        yield from mlp(f"{blk}.2.DenseReluDense", path)
    norm = "encoder_norm" if stack == "encoder" else "decoder_norm"
    yield norm_scale(f"{stack}.final_layer_norm", (stack, norm), h)
  if not config.tie_word_embeddings:
    yield "lm_head.weight", ("decoder", "logits_dense", "kernel"), True, (h, v)


def _hf_shape(shape: tuple[int, ...], transpose: bool) -> tuple[int, ...]:
  return tuple(reversed(shape)) if transpose else tuple(shape)


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _get(tree: Mapping, path: tuple[str, ...]) -> Any:
  node: Any = tree
  for i, key in enumerate(path):
    if not isinstance(node, Mapping) or key not in node:
      raise CheckpointMismatchError(
        f"parameter tree lacks {'/'.join(path[: i + 1])} (needed for the HF state dict)"
      )
    node = node[key]
  return node


def hf_state_dict_to_tree(
  sd: Mapping[str, Any], config: T5Config, *, strict: bool = True
) -> dict[str, Any]:
  """Converts a HF `T5ForConditionalGeneration` state dict into our parameter tree.

  Args:
    sd: HF name -> array (numpy, or anything `np.asarray` accepts), PyTorch layout.
    config: the architecture the tree is for.
    strict: raise on keys that are not part of the architecture (listed in the error).

  Returns:
    Nested dict of numpy arrays in `config.param_dtype`, laid out as in docs/design.md (without
    the outer "params" key).

  Raises:
    CheckpointMismatchError: missing keys, wrong shapes, or (strict) unexpected keys.
  """
  dtype = np.dtype(config.param_dtype) if config.param_dtype != "bfloat16" else None
  if "shared.weight" not in sd:
    # Some conversions keep only one of the tied embedding copies.
    alias = next((k for k in _EMBED_ALIASES if k in sd), None)
    if alias is not None:
      sd = {**sd, "shared.weight": sd[alias]}
  tree: dict[str, Any] = {}
  used: set[str] = set()
  missing: list[str] = []
  wrong: list[str] = []
  for hf_name, path, transpose, shape in param_layout(config):
    if hf_name not in sd and hf_name == "lm_head.weight" and "shared.weight" in sd:
      # transformers >= 5 ties lm_head to shared (and saves only shared) unless the checkpoint
      # holds a distinct lm_head; the untied layout then starts from the shared embedding.
      src_name = "shared.weight"
    else:
      src_name = hf_name
    if src_name not in sd:
      missing.append(f"{hf_name} (expected shape {_hf_shape(shape, transpose)})")
      continue
    used.add(src_name)
    arr = np.asarray(sd[src_name])
    expected = _hf_shape(shape, transpose)
    if tuple(arr.shape) != expected:
      wrong.append(f"{hf_name}: checkpoint has {tuple(arr.shape)}, config expects {expected}")
      continue
    if transpose:
      arr = arr.T
    arr = arr.astype(dtype, copy=False) if dtype is not None else _to_bfloat16(arr)
    _set(tree, path, arr)

  if config.tie_word_embeddings and "lm_head.weight" in sd and "shared.weight" in sd:
    used.add("lm_head.weight")
    if not np.array_equal(np.asarray(sd["lm_head.weight"]), np.asarray(sd["shared.weight"])):
      wrong.append(
        "lm_head.weight differs from shared.weight, but the config ties them "
        "(tie_word_embeddings=True, the T5 1.0 layout); use tie_word_embeddings=False"
      )
  used.update(k for k in _EMBED_ALIASES if k in sd)
  unexpected = sorted(k for k in sd if k not in used)
  if missing or wrong or (strict and unexpected):
    lines = ["HF T5 checkpoint does not match the model config:"]
    lines += [f"  missing: {m}" for m in missing]
    lines += [f"  wrong shape: {w}" for w in wrong]
    if unexpected:
      shown = unexpected[:20]
      more = f" (+{len(unexpected) - 20} more)" if len(unexpected) > 20 else ""
      lines.append(f"  unexpected keys: {', '.join(shown)}{more}")
    lines.append(
      "  check that the config (feed_forward_proj, tie_word_embeddings, layer counts, sizes) "
      "is the checkpoint's own config.json"
    )
    raise CheckpointMismatchError("\n".join(lines))
  return tree


def tree_to_hf_state_dict(
  tree: Mapping[str, Any], config: T5Config, *, include_tied: bool = True
) -> dict[str, np.ndarray]:
  """Converts our parameter tree into a HF `T5ForConditionalGeneration` state dict.

  Args:
    tree: nested dict of arrays (with or without the outer "params" key).
    config: the architecture.
    include_tied: also emit the tied copies `encoder/decoder.embed_tokens.weight` (and
      `lm_head.weight` for tied models), which `load_state_dict(strict=True)` expects.

  Returns:
    HF name -> numpy array in PyTorch layout.
  """
  if "params" in tree and "token_embedder" not in tree:
    tree = tree["params"]
  sd: dict[str, np.ndarray] = {}
  for hf_name, path, transpose, shape in param_layout(config):
    arr = np.asarray(_get(tree, path))
    if tuple(arr.shape) != tuple(shape):
      raise CheckpointMismatchError(
        f"{'/'.join(path)}: tree has {tuple(arr.shape)}, config expects {tuple(shape)}"
      )
    sd[hf_name] = np.ascontiguousarray(arr.T) if transpose else arr
  if include_tied:
    for alias in _EMBED_ALIASES:
      sd[alias] = sd["shared.weight"]
    if config.tie_word_embeddings:
      sd["lm_head.weight"] = sd["shared.weight"]
  return sd


def _to_bfloat16(arr: np.ndarray) -> np.ndarray:
  import ml_dtypes

  return arr.astype(ml_dtypes.bfloat16, copy=False)
