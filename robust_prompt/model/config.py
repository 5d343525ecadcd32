"""`T5Config`: the architecture of a T5 encoder-decoder, and conversion from/to HF `config.json`."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import jax.numpy as jnp

if TYPE_CHECKING:  # typing.Self is Python 3.11+; setup.py allows 3.10
  from typing_extensions import Self

from robust_prompt.model import remat

# Activations of the feed-forward block. HF runs "gated-gelu" with `gelu_new` (the tanh
# approximation), which is also what T5X/Flax use, so "gelu" inside a gated MLP means tanh-GELU.
FEED_FORWARD_PROJS = ("relu", "gelu", "silu", "gated-relu", "gated-gelu", "gated-silu")
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


class JsonConfig:
  """What the model families' frozen config dataclasses share: our JSON form, dtypes, checks.

  A subclass has `dtype` and `param_dtype` fields (names in `_DTYPES`).
  """

  # Options of a run rather than of the model (the numbers do not depend on them): checkpoints
  # leave them out (`to_json(runtime=False)`), so a run's gin decides them, not the weights.
  RUNTIME_FIELDS: ClassVar[tuple[str, ...]] = ("remat_policy",)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
      raise ValueError(f"unknown {cls.__name__} fields {unknown}; known fields: {sorted(names)}")
    return cls(**d)

  def to_json(self, path: str | os.PathLike | None = None, *, runtime: bool = True) -> str:
    """Returns the JSON text of the config; also writes it to `path` when given.

    Args:
      path: where to write it (None: only return it).
      runtime: include `RUNTIME_FIELDS` (False for what a checkpoint stores; reading it back
        gives their defaults).
    """
    d = self.to_dict()
    if not runtime:
      for name in self.RUNTIME_FIELDS:
        d.pop(name, None)
    text = json.dumps(d, indent=2, sort_keys=True) + "\n"
    if path is not None:
      with open(path, "w") as f:
        f.write(text)
    return text

  @staticmethod
  def _read_json(path_or_text: str | os.PathLike) -> dict[str, Any]:
    """The dict of a JSON config: a path, or the JSON text itself (a ValueError if not JSON)."""
    text = str(path_or_text)
    where = "<json text>"
    if not text.lstrip().startswith("{"):
      with open(path_or_text) as f:
        text = f.read()
      where = str(path_or_text)
    try:
      return json.loads(text)
    except json.JSONDecodeError as e:
      raise ValueError(f"{where}: line {e.lineno}: not valid JSON: {e.msg}") from e

  def _check_dtypes_and_sizes(self, sizes: Sequence[str], unset_hint: str) -> None:
    """Raises ValueError unless the dtypes are known and every field in `sizes` is a positive int.

    Args:
      sizes: names of fields that must be positive ints.
      unset_hint: added to the error when a size holds no value at all (gin's %gin.REQUIRED
        sentinel of a family file); `{name}` in it stands for the field's name.
    """
    cls = type(self).__name__
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in _DTYPES:
        raise ValueError(
          f"{cls}.{name}={getattr(self, name)!r} is not supported; use one of {sorted(_DTYPES)}"
        )
    for name in sizes:
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        hint = "" if isinstance(value, (int, float, str)) else unset_hint.format(name=name)
        raise ValueError(f"{cls}.{name} must be a positive int, got {value!r}{hint}")

  @property
  def jnp_dtype(self) -> Any:
    """Activation dtype as a jnp dtype."""
    return _DTYPES[self.dtype]

  @property
  def jnp_param_dtype(self) -> Any:
    """Parameter dtype as a jnp dtype."""
    return _DTYPES[self.param_dtype]

  def replace(self, **changes: Any) -> Self:
    return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class T5Config(JsonConfig):
  """Architecture of a T5 model (T5 1.0, T5 1.1, Flan-T5, T0 are all instances of it).

  `tie_word_embeddings=True` is the T5 1.0 layout: the output layer is the token embedding and the
  decoder output is scaled by `d_model**-0.5` first. `False` (T5 1.1 / Flan-T5 / T0) has a separate
  `decoder/logits_dense` kernel and no rescaling.

  `dtype`, `param_dtype` and `remat_policy` are not architecture: activation and parameter dtypes,
  and what each layer keeps for the backward pass ("none", "full", "dots"; `model/remat.py`).
  """

  vocab_size: int = 32128
  d_model: int = 512
  num_heads: int = 6
  head_dim: int = 64
  d_ff: int = 1024
  num_encoder_layers: int = 8
  num_decoder_layers: int = 8
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  feed_forward_proj: str = "gated-gelu"
  tie_word_embeddings: bool = False
  layer_norm_epsilon: float = 1e-6
  dtype: str = "float32"  # activations
  param_dtype: str = "float32"
  pad_token_id: int = 0
  eos_token_id: int = 1
  decoder_start_token_id: int = 0
  # Runtime option, not architecture: rematerialisation of each layer (model/remat.py).
  remat_policy: str = remat.DEFAULT_POLICY

  def __post_init__(self):
    remat.check_policy(self.remat_policy, "T5Config.remat_policy")
    if self.feed_forward_proj not in FEED_FORWARD_PROJS:
      raise ValueError(
        f"T5Config.feed_forward_proj={self.feed_forward_proj!r} is not supported; "
        f"use one of {FEED_FORWARD_PROJS}"
      )
    self._check_dtypes_and_sizes(
      (
        "vocab_size",
        "d_model",
        "num_heads",
        "head_dim",
        "d_ff",
        "num_encoder_layers",
        "num_decoder_layers",
        "relative_attention_num_buckets",
        "relative_attention_max_distance",
      ),
      # e.g. gin's %gin.REQUIRED sentinel from the family files models/t5_1_{0,1}.gin.
      " (not set: with gin, include a size file such as models/t5_1_1_base.gin "
      "or bind it with --gin.T5Config.{name}=...)",
    )

  # ---------------------------------------------------------------- derived properties
  @property
  def is_gated(self) -> bool:
    """True for the gated MLP of T5 1.1 (`wi_0`, `wi_1`)."""
    return self.feed_forward_proj.startswith("gated-")

  @property
  def activation(self) -> str:
    """Name of the MLP activation: 'relu', 'gelu' (exact), 'gelu_tanh' or 'silu'."""
    act = self.feed_forward_proj.split("-")[-1]
    if act == "gelu" and self.is_gated:
      return "gelu_tanh"  # HF maps gated-gelu to gelu_new
    return act

  # ---------------------------------------------------------------- Hugging Face config.json
  @classmethod
  def from_hf_dict(cls, d: Mapping[str, Any], **overrides: Any) -> T5Config:
    """Builds a config from a Hugging Face T5 `config.json` dict.

    transformers >= 5 saves T5 1.1 models with `tie_word_embeddings: true` and
    `scale_decoder_outputs: false` (it always ties `lm_head` to `shared` unless the checkpoint
    holds a distinct `lm_head.weight`). What decides the architecture is whether the decoder output
    is rescaled, so `scale_decoder_outputs` wins over `tie_word_embeddings` when present.
    """
    try:
      num_layers = int(d["num_layers"])
      ff = d.get("feed_forward_proj", "relu")
      if "scale_decoder_outputs" in d:
        tied = bool(d["scale_decoder_outputs"])
      else:
        tied = bool(d.get("tie_word_embeddings", True))
      kwargs = dict(
        vocab_size=int(d["vocab_size"]),
        d_model=int(d["d_model"]),
        num_heads=int(d["num_heads"]),
        head_dim=int(d["d_kv"]),
        d_ff=int(d["d_ff"]),
        num_encoder_layers=num_layers,
        num_decoder_layers=int(
          d["num_decoder_layers"] if d.get("num_decoder_layers") is not None else num_layers
        ),
        relative_attention_num_buckets=int(d.get("relative_attention_num_buckets", 32)),
        relative_attention_max_distance=int(d.get("relative_attention_max_distance", 128)),
        feed_forward_proj=ff,
        tie_word_embeddings=tied,
        layer_norm_epsilon=float(d.get("layer_norm_epsilon", 1e-6)),
        pad_token_id=int(d.get("pad_token_id", 0) if d.get("pad_token_id") is not None else 0),
        eos_token_id=_first_int(d.get("eos_token_id", 1), 1),
        decoder_start_token_id=int(
          d.get("decoder_start_token_id", 0) if d.get("decoder_start_token_id") is not None else 0
        ),
      )
    except KeyError as e:
      raise ValueError(f"HF T5 config.json lacks the required key {e.args[0]!r}") from e
    kwargs.update(overrides)
    return cls(**kwargs)

  def to_hf_dict(self) -> dict[str, Any]:
    """The Hugging Face `config.json` dict for this architecture."""
    return {
      "architectures": ["T5ForConditionalGeneration"],
      "model_type": "t5",
      "vocab_size": self.vocab_size,
      "d_model": self.d_model,
      "d_kv": self.head_dim,
      "d_ff": self.d_ff,
      "num_layers": self.num_encoder_layers,
      "num_decoder_layers": self.num_decoder_layers,
      "num_heads": self.num_heads,
      "relative_attention_num_buckets": self.relative_attention_num_buckets,
      "relative_attention_max_distance": self.relative_attention_max_distance,
      "feed_forward_proj": self.feed_forward_proj,
      "tie_word_embeddings": self.tie_word_embeddings,
      "layer_norm_epsilon": self.layer_norm_epsilon,
      "dropout_rate": 0.0,
      "is_encoder_decoder": True,
      "pad_token_id": self.pad_token_id,
      "eos_token_id": self.eos_token_id,
      "decoder_start_token_id": self.decoder_start_token_id,
    }

  # ---------------------------------------------------------------- our own JSON (JsonConfig)

  @classmethod
  def from_json(cls, path_or_text: str | os.PathLike) -> T5Config:
    """Reads a config written by `to_json` (a path or the JSON text itself)."""
    d = cls._read_json(path_or_text)
    # Also accept a Hugging Face config.json.
    if "d_kv" in d and "num_layers" in d:
      return cls.from_hf_dict(d)
    return cls.from_dict(d)


def _first_int(value: Any, default: int) -> int:
  if value is None:
    return default
  if isinstance(value, (list, tuple)):
    return int(value[0]) if value else default
  return int(value)
