"""`DecoderConfig`: the architecture of a decoder-only LM (Llama, Mistral, Qwen2) + HF config.json.

One frozen dataclass covers the three Hugging Face model types we run: `llama` (LLaMA 1/2/3,
Alpaca, and Llama 3.1's `llama3` rope scaling), `mistral` (a Llama with grouped-query attention
and a sliding window, which we never need: inputs longer than the window are refused) and `qwen2`
(q/k/v biases, often tied embeddings). The config is hashable (it is static under `jax.jit`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from robust_prompt.model import remat
from robust_prompt.model.config import JsonConfig

MODEL_TYPES = ("llama", "mistral", "qwen2")
ROPE_TYPES = ("default", "linear", "llama3")


@dataclasses.dataclass(frozen=True)
class DecoderConfig(JsonConfig):
  """Architecture of a decoder-only transformer (pre-norm RMSNorm, rotary, SwiGLU, GQA).

  Attributes:
    model_type: the Hugging Face model type ("llama", "mistral", "qwen2").
    vocab_size: V, rows of the token embedding.
    d_model: H (`hidden_size`).
    num_layers: L.
    num_heads: N query heads; num_kv_heads: key/value heads (grouped-query attention).
    head_dim: D.
    d_ff: F, the SwiGLU inner width (`intermediate_size`).
    rms_norm_eps: added to the mean square in every RMSNorm.
    rope_theta: rotary base.
    rope_type: "default", "linear" (positions divided by `rope_factor`) or "llama3" (Llama 3.1's
      frequency-dependent scaling with `rope_factor`, `rope_low_freq_factor`,
      `rope_high_freq_factor` and `rope_original_max_position`).
    max_position_embeddings: the context the model was trained for (informative).
    attention_bias: q/k/v projections have biases (Qwen2; Llama's `attention_bias`).
    attention_out_bias: the output projection has a bias (Llama's `attention_bias` only).
    tie_word_embeddings: the output layer is the token embedding (no `logits_dense`).
    sliding_window: Mistral's attention window; longer inputs are refused (None: no window).
    dtype: activations; param_dtype: parameters.
    bos_token_id: BOS (None when the model has none); the soft prompt goes after it.
    eos_token_id: the EOS that ends a greedy decode; extra_eos_token_ids: further ids that do
      (Llama 3 instruct's `<|eot_id|>`).
    pad_token_id: written after EOS by greedy decoding (the checkpoint's pad id, else EOS).
    remat_policy: a runtime option, not architecture: rematerialisation of each layer in the
      backward pass, "none", "full" or "dots" (model/remat.py); checkpoints do not store it.
  """

  model_type: str = "llama"
  vocab_size: int = 32000
  d_model: int = 4096
  num_layers: int = 32
  num_heads: int = 32
  num_kv_heads: int = 32
  head_dim: int = 128
  d_ff: int = 11008
  rms_norm_eps: float = 1e-6
  rope_theta: float = 10000.0
  rope_type: str = "default"
  rope_factor: float = 1.0
  rope_low_freq_factor: float = 1.0
  rope_high_freq_factor: float = 4.0
  rope_original_max_position: int = 8192
  max_position_embeddings: int = 2048
  attention_bias: bool = False
  attention_out_bias: bool = False
  tie_word_embeddings: bool = False
  sliding_window: int | None = None
  dtype: str = "float32"
  param_dtype: str = "float32"
  bos_token_id: int | None = 1
  eos_token_id: int = 2
  extra_eos_token_ids: tuple[int, ...] = ()
  pad_token_id: int = 2
  remat_policy: str = remat.DEFAULT_POLICY

  def __post_init__(self):
    remat.check_policy(self.remat_policy, "DecoderConfig.remat_policy")
    if self.model_type not in MODEL_TYPES:
      raise ValueError(
        f"DecoderConfig.model_type={self.model_type!r} is not supported; use one of {MODEL_TYPES}"
      )
    if self.rope_type not in ROPE_TYPES:
      raise ValueError(
        f"DecoderConfig.rope_type={self.rope_type!r} is not supported; use one of {ROPE_TYPES}"
      )
    self._check_dtypes_and_sizes(
      (
        "vocab_size",
        "d_model",
        "num_layers",
        "num_heads",
        "num_kv_heads",
        "head_dim",
        "d_ff",
        "max_position_embeddings",
        "rope_original_max_position",
      ),
      # gin's %gin.REQUIRED sentinel of a family file (models/llama.gin, models/qwen2.gin).
      " (not set: with gin, include a size file such as models/llama3_8b.gin)",
    )
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
        f"DecoderConfig: num_heads={self.num_heads} is not a multiple of "
        f"num_kv_heads={self.num_kv_heads} (grouped-query attention shares each key/value head "
        "among a whole number of query heads)"
      )
    if self.sliding_window is not None and self.sliding_window <= 0:
      raise ValueError(
        f"DecoderConfig.sliding_window must be positive or None, got {self.sliding_window!r}"
      )
    # Lists (JSON, gin) become tuples so that the config stays hashable.
    object.__setattr__(self, "extra_eos_token_ids", tuple(int(i) for i in self.extra_eos_token_ids))

  # ---------------------------------------------------------------- derived properties
  @property
  def eos_token_ids(self) -> tuple[int, ...]:
    """Every id that ends a greedy decode (`eos_token_id` first)."""
    return (self.eos_token_id, *(i for i in self.extra_eos_token_ids if i != self.eos_token_id))

  # ---------------------------------------------------------------- Hugging Face config.json
  @classmethod
  def from_hf_dict(cls, d: Mapping[str, Any], **overrides: Any) -> DecoderConfig:
    """Builds a config from a Hugging Face `config.json` of a llama / mistral / qwen2 model.

    Reads both rope layouts: transformers >= 5 writes `rope_parameters` (with `rope_theta` and
    `rope_type` inside), older files `rope_theta` beside a `rope_scaling` dict (`rope_type` or
    the older `type`).

    Raises:
      ValueError: an unsupported model type, activation, rope scaling or MLP bias, or a missing key.
    """
    model_type = d.get("model_type")
    if model_type not in MODEL_TYPES:
      raise ValueError(
        f"config.json model_type {model_type!r} is not a decoder-only family we support "
        f"({', '.join(MODEL_TYPES)})"
      )
    act = d.get("hidden_act", "silu")
    if act != "silu":
      raise ValueError(f"config.json hidden_act {act!r}: only SwiGLU (silu) MLPs are supported")
    if d.get("mlp_bias"):
      raise ValueError("config.json mlp_bias=true: MLP biases are not supported")
    try:
      d_model = int(d["hidden_size"])
      num_heads = int(d["num_attention_heads"])
      rope = dict(d.get("rope_parameters") or d.get("rope_scaling") or {})
      theta = rope.get("rope_theta", d.get("rope_theta", 10000.0))
      rope_type = rope.get("rope_type", rope.get("type", "default")) or "default"
      eos = d.get("eos_token_id")
      eos_ids = [
        int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if e is not None
      ]
      if not eos_ids:
        raise ValueError("config.json has no eos_token_id (greedy decoding needs one)")
      pad = d.get("pad_token_id")
      if isinstance(pad, (list, tuple)):
        pad = pad[0] if pad else None
      bias = bool(d.get("attention_bias", False))
      window = d.get("sliding_window")
      if model_type == "qwen2" and not d.get("use_sliding_window", False):
        window = None  # Qwen2 configs name a window but attend fully unless use_sliding_window.
      kwargs = dict(
        model_type=model_type,
        vocab_size=int(d["vocab_size"]),
        d_model=d_model,
        num_layers=int(d["num_hidden_layers"]),
        num_heads=num_heads,
        num_kv_heads=int(d.get("num_key_value_heads") or num_heads),
        head_dim=int(d.get("head_dim") or d_model // num_heads),
        d_ff=int(d["intermediate_size"]),
        rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
        rope_theta=float(theta),
        rope_type=str(rope_type),
        rope_factor=float(rope.get("factor", 1.0)),
        rope_low_freq_factor=float(rope.get("low_freq_factor", 1.0)),
        rope_high_freq_factor=float(rope.get("high_freq_factor", 4.0)),
        rope_original_max_position=int(rope.get("original_max_position_embeddings", 8192)),
        max_position_embeddings=int(d.get("max_position_embeddings", 2048)),
        # Qwen2's q/k/v projections always have biases (not a config key there).
        attention_bias=bias or model_type == "qwen2",
        attention_out_bias=bias and model_type != "qwen2",
        tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
        sliding_window=None if window is None else int(window),
        bos_token_id=None if d.get("bos_token_id") is None else int(d["bos_token_id"]),
        eos_token_id=eos_ids[0],
        extra_eos_token_ids=tuple(eos_ids[1:]),
        pad_token_id=int(pad) if pad is not None else eos_ids[0],
      )
    except KeyError as e:
      raise ValueError(f"HF {model_type} config.json lacks the required key {e.args[0]!r}") from e
    kwargs.update(overrides)
    return cls(**kwargs)

  # ---------------------------------------------------------------- our own JSON
  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["extra_eos_token_ids"] = list(self.extra_eos_token_ids)
    return d

  @classmethod
  def from_json(cls, path_or_text: str | os.PathLike) -> DecoderConfig:
    """Reads a config written by `to_json`, or a Hugging Face config.json (a path or the text)."""
    d = cls._read_json(path_or_text)
    if "hidden_size" in d:
      return cls.from_hf_dict(d)
    return cls.from_dict(d)


def is_decoder_config_dict(d: Mapping[str, Any]) -> bool:
  """True for a config dict of the decoder-only family (ours or Hugging Face's)."""
  return d.get("model_type") in MODEL_TYPES
