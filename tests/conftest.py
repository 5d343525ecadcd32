"""Shared test set-up: 8 fake CPU devices, paths to ../shared, tiny HF T5 models, CLI gin."""

import os

# Must happen before jax is imported anywhere: the multi-device tests use a real 8-device CPU mesh.
os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests never reach a hub: every model they use is created locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Hermetic tests: no compiled programs shared through the user cache directory (tests of the
# cache pass --compilation_cache_dir themselves).
os.environ.setdefault("ROBUST_PROMPT_COMPILATION_CACHE", "none")

import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared"


def _shared_path(*parts: str) -> pathlib.Path:
  path = SHARED.joinpath(*parts)
  if not path.exists():
    pytest.skip(
      f"needs {path}: the real material in ../shared (beside the checkout) is absent here; "
      "CI provides it"
    )
  return path


@pytest.fixture(scope="session")
def shared_dir() -> pathlib.Path:
  return _shared_path()


@pytest.fixture(scope="session")
def spiece_path() -> pathlib.Path:
  return _shared_path("fixtures", "t5_spiece.model")


@pytest.fixture(scope="session")
def t5x_tiny_checkpoint() -> pathlib.Path:
  return _shared_path("fixtures", "t5x_t5_1_1_tiny", "checkpoint_3")


@pytest.fixture(scope="session")
def mmlu_dir() -> pathlib.Path:
  return _shared_path("data", "mmlu")


@pytest.fixture(scope="session")
def bigbench_lite_dir() -> pathlib.Path:
  return _shared_path("data", "bigbench_lite")


TINY_HF_CONFIGS = {
  # T5 1.0: ReLU MLP, tied embeddings (logits rescaled by d_model**-0.5).
  "t5_1_0": dict(feed_forward_proj="relu", tie_word_embeddings=True),
  # T5 1.1 / Flan-T5 / T0: gated-GELU, untied output layer.
  "t5_1_1": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False),
}


def make_tiny_hf_t5(out_dir: pathlib.Path, kind: str, spiece: pathlib.Path | None, seed: int = 0):
  """Saves a random tiny `T5ForConditionalGeneration` (+ tokenizer) with `save_pretrained`."""
  import torch
  import transformers

  torch.manual_seed(seed)
  config = transformers.T5Config(
    vocab_size=32128,
    d_model=32,
    d_kv=8,
    d_ff=48,
    num_layers=2,
    num_decoder_layers=3,
    num_heads=4,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=20,
    dropout_rate=0.0,
    decoder_start_token_id=0,
    pad_token_id=0,
    eos_token_id=1,
    **TINY_HF_CONFIGS[kind],
  )
  model = transformers.T5ForConditionalGeneration(config).eval()
  # Random init of T5 in transformers is tiny for some weights; widen it so that logits differ
  # meaningfully between tokens and the parity tests are not trivially satisfied.
  with torch.no_grad():
    for p in model.parameters():
      p.normal_(0.0, 0.5)
  model.save_pretrained(out_dir)
  if not TINY_HF_CONFIGS[kind]["tie_word_embeddings"]:
    # transformers 5 always ties `lm_head` to `shared` when it builds a model (and then saves only
    # `shared.weight`), but real T5 1.1 / Flan-T5 checkpoints hold a distinct `lm_head.weight`,
    # which from_pretrained keeps untied. Write one so the untied output layer is really tested.
    import safetensors.torch

    path = out_dir / "model.safetensors"
    state = safetensors.torch.load_file(path)
    state["lm_head.weight"] = torch.randn(config.vocab_size, config.d_model) * 0.5
    safetensors.torch.save_file(state, path, metadata={"format": "pt"})
  if spiece is not None:
    # transformers 5 builds the fast tokenizer from `spiece.model` only through from_pretrained
    # on a directory (the `vocab_file=` argument is silently ignored and yields <unk>s).
    import shutil

    shutil.copy(spiece, out_dir / "spiece.model")
    tok = transformers.T5TokenizerFast.from_pretrained(out_dir)
    tok.save_pretrained(out_dir)
  return out_dir


def load_tiny_hf_t5(model_dir: pathlib.Path):
  """`(T5Config, params tree, raw state dict)` of a saved HF T5 (`make_tiny_hf_t5`'s output)."""
  import json

  from safetensors.numpy import load_file

  from robust_prompt.checkpoints.hf_names import hf_state_dict_to_tree
  from robust_prompt.model.config import T5Config

  config = T5Config.from_hf_dict(json.loads((model_dir / "config.json").read_text()))
  state_dict = load_file(model_dir / "model.safetensors")
  return config, hf_state_dict_to_tree(state_dict, config), state_dict


@pytest.fixture(scope="session", params=["t5_1_0", "t5_1_1"])
def tiny_hf_dir(request, tmp_path_factory, spiece_path) -> pathlib.Path:
  """A saved random tiny HF T5 (both architectures) with the real T5 tokenizer."""
  out = tmp_path_factory.mktemp(f"hf_{request.param}")
  return make_tiny_hf_t5(out, request.param, spiece_path)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, spiece_path) -> pathlib.Path:
  """One saved random tiny HF T5 1.1 (seed 0, the real tokenizer) for a module's CLI runs."""
  return make_tiny_hf_t5(tmp_path_factory.mktemp("tiny_t5_1_1"), "t5_1_1", spiece_path)


@pytest.fixture
def cli_gin():
  """The gin names the CLI registers (T5Config, evaluate, train, data, losses, optimizer, prompt)."""
  import gin

  from robust_prompt.cli import eval as eval_cli
  from robust_prompt.cli import gin_utils
  from robust_prompt.cli import train as train_cli

  gin_utils.register_configurables()
  eval_cli.configured_settings()
  train_cli.configurables()
  yield
  gin.clear_config()
