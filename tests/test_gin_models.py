"""Every gin file in gin_configs/models and gin_configs/mesh parses; published parameter counts."""

import pathlib

import gin
import jax
import pytest
from helpers import GIN_DIR, assert_needs_size_file, model_config, model_gin_fixture, num_params

from robust_prompt import partitioning
from robust_prompt.model.config import T5Config
from robust_prompt.model.t5 import T5

# The T5 family's files (the decoder-only ones are checked by tests/test_decoder_gin.py).
MODEL_FILES = sorted(
  p for p in (GIN_DIR / "models").glob("*.gin") if "DecoderConfig" not in p.read_text()
)
MESH_FILES = sorted((GIN_DIR / "mesh").glob("*.gin"))
FAMILY_FILES = {"t5_1_0.gin", "t5_1_1.gin"}  # sizes left %gin.REQUIRED

# Parameter counts of the published Hugging Face checkpoints (shared embedding counted once).
PUBLISHED = {
  "t5_small": 60_506_624,
  "t5_base": 222_903_552,
  "t5_large": 737_668_096,
  "t5_3b": 2_851_598_336,
  "t5_11b": 11_307_321_344,
  "flan_t5_small": 76_961_152,
  "flan_t5_base": 247_577_856,
  "flan_t5_large": 783_150_080,
  "flan_t5_xl": 2_849_757_184,
  "flan_t5_xxl": 11_135_332_352,
  "t0_3b": 2_849_757_184,
  "t0pp": 11_135_332_352,
}


gin_env = model_gin_fixture(T5Config)


def _config(path: pathlib.Path) -> T5Config:
  return model_config(path, T5Config)


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.name)
def test_model_gin_parses(path):
  text = path.read_text()
  assert text.startswith("# Contract:"), f"{path.name} must open with its contract comment"
  if path.name in FAMILY_FILES:
    assert_needs_size_file(path)
    return
  cfg = _config(path)
  assert cfg.vocab_size == 32128 and cfg.head_dim in (64, 128)
  if path.stem in PUBLISHED:
    assert gin.query_parameter("%HF_MODEL_ID")
  if path.stem.startswith(("flan_t5", "t0")):
    # Alias files are only includes (and the hub id).
    bindings = [
      line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    assert all(line.startswith(("include ", "HF_MODEL_ID")) for line in bindings), bindings


@pytest.mark.parametrize(
  "name", ["t5_small", "flan_t5_small", "t5_base", "flan_t5_xl", "t0pp", "t5_11b"]
)
def test_published_parameter_counts(name):
  cfg = _config(GIN_DIR / "models" / f"{name}.gin")
  n = num_params(T5(cfg))
  assert abs(n - PUBLISHED[name]) / PUBLISHED[name] < 0.01, (name, n)


def test_architectures():
  small = _config(GIN_DIR / "models" / "t5_small.gin")
  assert (small.feed_forward_proj, small.tie_word_embeddings) == ("relu", True)
  assert (small.d_model, small.d_ff, small.num_heads, small.num_encoder_layers) == (512, 2048, 8, 6)
  gin.clear_config(clear_constants=True)
  flan = _config(GIN_DIR / "models" / "flan_t5_large.gin")
  assert (flan.feed_forward_proj, flan.tie_word_embeddings) == ("gated-gelu", False)
  assert (flan.d_model, flan.d_ff, flan.num_heads, flan.num_decoder_layers) == (1024, 2816, 16, 24)
  assert gin.query_parameter("%HF_MODEL_ID") == "google/flan-t5-large"


@pytest.mark.parametrize("path", MESH_FILES, ids=lambda p: p.name)
def test_mesh_gin_parses(path):
  assert path.read_text().startswith("# Contract:")
  gin.parse_config_file(str(path))
  data, model = gin.query_parameter("%MESH_DATA"), gin.query_parameter("%MESH_MODEL")
  assert isinstance(data, int) and isinstance(model, int)
  if jax.device_count() % (model if model > 0 else 1) == 0:
    mesh = partitioning.make_mesh(data, model)
    assert mesh.axis_names == ("data", "model")


def test_mesh_files_exist():
  assert {p.name for p in MESH_FILES} >= {"data_parallel.gin", "model_parallel_2d.gin"}
  assert len(MODEL_FILES) >= 17
