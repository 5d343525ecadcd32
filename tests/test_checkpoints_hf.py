"""Hugging Face checkpoints: every weight layout, hub ids (cache / offline), clear errors."""

import json
import pathlib
import shutil

import jax
import ml_dtypes
import numpy as np
import pytest
import seqio
from conftest import make_tiny_hf_t5

from robust_prompt.checkpoints import hf, resolve
from robust_prompt.checkpoints.hf_names import CheckpointMismatchError

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, spiece_path) -> pathlib.Path:
  """A tiny T5 1.1 saved by `save_pretrained` (model.safetensors) with the real tokenizer."""
  return make_tiny_hf_t5(tmp_path_factory.mktemp("hf_t5_1_1"), "t5_1_1", spiece_path, seed=1)


@pytest.fixture(scope="module")
def reference(hf_dir):
  return resolve.load_model(str(hf_dir))


def _copy_without_weights(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
  dst.mkdir()
  for name in ("config.json", "spiece.model", "tokenizer.json", "tokenizer_config.json"):
    shutil.copy(src / name, dst / name)
  return dst


def _write_index(path: pathlib.Path, shards: dict[str, list[str]]) -> None:
  weight_map = {k: fname for fname, keys in shards.items() for k in keys}
  path.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def _split(keys: list[str], n: int) -> list[list[str]]:
  return [keys[i::n] for i in range(n)]


def _assert_same_tree(a, b):
  flat_a = jax.tree_util.tree_flatten_with_path(a)[0]
  flat_b = dict(jax.tree_util.tree_flatten_with_path(b)[0])
  assert len(flat_a) == len(flat_b)
  for path, x in flat_a:
    y = flat_b[path]
    assert x.dtype == y.dtype == np.float32, path
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


def test_safetensors_sharded_and_pytorch_layouts_load_the_same(hf_dir, reference, tmp_path):
  import safetensors.numpy
  import torch

  sd = hf.read_hf_state_dict(hf_dir)
  keys = sorted(sd)
  # Sharded safetensors with an index.
  sharded = _copy_without_weights(hf_dir, tmp_path / "sharded_st")
  shards = {f"model-0000{i + 1}-of-00003.safetensors": ks for i, ks in enumerate(_split(keys, 3))}
  for fname, ks in shards.items():
    safetensors.numpy.save_file({k: np.ascontiguousarray(sd[k]) for k in ks}, sharded / fname)
  _write_index(sharded / hf.SAFETENSORS_INDEX_NAME, shards)
  # A single pytorch_model.bin.
  pt = _copy_without_weights(hf_dir, tmp_path / "pytorch")
  torch.save({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, pt / hf.PYTORCH_NAME)
  # Sharded pytorch_model.bin with an index.
  pt_sharded = _copy_without_weights(hf_dir, tmp_path / "pytorch_sharded")
  shards = {f"pytorch_model-0000{i + 1}-of-00002.bin": ks for i, ks in enumerate(_split(keys, 2))}
  for fname, ks in shards.items():
    torch.save({k: torch.from_numpy(np.array(sd[k])) for k in ks}, pt_sharded / fname)
  _write_index(pt_sharded / hf.PYTORCH_INDEX_NAME, shards)

  for model_dir in (sharded, pt, pt_sharded):
    loaded = resolve.load_model(str(model_dir))
    assert loaded.config == reference.config
    _assert_same_tree(loaded.params, reference.params)
  assert isinstance(reference.params["decoder"]["logits_dense"]["kernel"], np.ndarray)


def test_bfloat16_and_float16_checkpoints_are_upcast(hf_dir, reference, tmp_path):
  import safetensors.numpy
  import torch

  sd = hf.read_hf_state_dict(hf_dir)
  bf16 = _copy_without_weights(hf_dir, tmp_path / "bf16")
  # The bf16 file is written by torch (numpy cannot write bfloat16 safetensors).
  import safetensors.torch

  safetensors.torch.save_file(
    {k: torch.from_numpy(np.array(v)).bfloat16() for k, v in sd.items()}, bf16 / hf.SAFETENSORS_NAME
  )
  fp16 = _copy_without_weights(hf_dir, tmp_path / "fp16")
  safetensors.numpy.save_file(
    {k: v.astype(np.float16) for k, v in sd.items()}, fp16 / hf.SAFETENSORS_NAME
  )
  for model_dir, low in ((bf16, ml_dtypes.bfloat16), (fp16, np.float16)):
    loaded = resolve.load_model(str(model_dir))
    emb = loaded.params["token_embedder"]["embedding"]
    assert emb.dtype == np.float32
    expected = reference.params["token_embedder"]["embedding"].astype(low).astype(np.float32)
    np.testing.assert_array_equal(emb, expected)


@pytest.mark.parametrize("kind", ["t5_1_0", "t5_1_1"])
def test_loaded_hf_model_matches_pytorch_logits(tmp_path, spiece_path, kind):
  import torch
  import transformers

  from robust_prompt.model.t5 import T5

  model_dir = make_tiny_hf_t5(tmp_path / kind, kind, spiece_path, seed=2)
  loaded = resolve.load_model(str(model_dir))
  assert loaded.config.tie_word_embeddings == (kind == "t5_1_0")
  torch_model = transformers.T5ForConditionalGeneration.from_pretrained(model_dir).eval()
  ids = np.array([[8774, 296, 5, 1, 0], [37, 1, 0, 0, 0]], np.int32)
  mask = (ids != 0).astype(np.int32)
  dec = np.array([[0, 8774, 296], [0, 37, 1]], np.int32)
  with torch.no_grad():
    want = torch_model(
      input_ids=torch.tensor(ids, dtype=torch.long),
      attention_mask=torch.tensor(mask, dtype=torch.long),
      decoder_input_ids=torch.tensor(dec, dtype=torch.long),
    ).logits.numpy()
  got = T5(loaded.config).apply({"params": loaded.params}, ids, mask, dec, np.ones_like(dec))
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=1e-4)


def _populate_hub_cache(hf_home: pathlib.Path, repo_id: str, model_dir: pathlib.Path) -> None:
  """The huggingface_hub cache layout: refs/main -> commit, snapshots/<commit>/<files>."""
  repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
  (repo / "refs").mkdir(parents=True)
  (repo / "refs" / "main").write_text(COMMIT)
  snapshot = repo / "snapshots" / COMMIT
  snapshot.mkdir(parents=True)
  for name in ("config.json", "model.safetensors", "spiece.model", "tokenizer.json"):
    shutil.copy(model_dir / name, snapshot / name)


def test_hub_id_found_in_a_local_cache(hf_dir, reference, tmp_path, monkeypatch):
  monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
  monkeypatch.delenv("HF_HUB_CACHE", raising=False)
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  _populate_hub_cache(tmp_path / "hf_home", "acme/tiny-t5", hf_dir)
  assert resolve.detect_kind("acme/tiny-t5") == "hub"
  loaded = resolve.load_model("acme/tiny-t5")
  assert loaded.source == "acme/tiny-t5"
  assert loaded.config == reference.config
  _assert_same_tree(loaded.params, reference.params)
  assert str(tmp_path / "hf_home") in loaded.vocab.sentencepiece_model_file


def test_hub_id_offline_and_not_cached_gives_a_clear_error(tmp_path, monkeypatch):
  monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_home"))
  monkeypatch.delenv("HF_HUB_CACHE", raising=False)
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  with pytest.raises(hf.HubDownloadError) as info:
    resolve.load_model("google/flan-t5-small")
  message = str(info.value)
  assert "google/flan-t5-small" in message
  assert str(tmp_path / "empty_home" / "hub") in message
  assert "HF_HUB_OFFLINE" in message and "hf download google/flan-t5-small" in message


def test_missing_key_and_wrong_shape_name_the_key_and_shapes(hf_dir, tmp_path):
  import safetensors.numpy

  sd = hf.read_hf_state_dict(hf_dir)
  missing = _copy_without_weights(hf_dir, tmp_path / "missing")
  safetensors.numpy.save_file(
    {
      k: np.ascontiguousarray(v)
      for k, v in sd.items()
      if k != "encoder.block.1.layer.1.DenseReluDense.wo.weight"
    },
    missing / hf.SAFETENSORS_NAME,
  )
  with pytest.raises(
    CheckpointMismatchError,
    match=r"encoder\.block\.1\.layer\.1\.DenseReluDense\.wo\.weight.*\(32, 48\)",
  ):
    resolve.load_model(str(missing))

  wrong = _copy_without_weights(hf_dir, tmp_path / "wrong")
  shutil.copy(hf_dir / hf.SAFETENSORS_NAME, wrong / hf.SAFETENSORS_NAME)
  config = json.loads((hf_dir / "config.json").read_text())
  config["d_ff"] = 64
  (wrong / "config.json").write_text(json.dumps(config))
  with pytest.raises(CheckpointMismatchError) as info:
    resolve.load_model(str(wrong))
  assert "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in str(info.value)
  assert "(48, 32)" in str(info.value) and "(64, 32)" in str(info.value)


def test_unrecognised_paths_give_clear_errors(hf_dir, tmp_path):
  with pytest.raises(FileNotFoundError, match="no such file or directory"):
    resolve.load_model(str(tmp_path / "nope"))
  only_config = tmp_path / "only_config"
  only_config.mkdir()
  shutil.copy(hf_dir / "config.json", only_config / "config.json")
  with pytest.raises(FileNotFoundError) as info:
    resolve.load_model(str(only_config))
  msg = str(info.value)
  assert "Found: config.json" in msg and "model.safetensors" in msg and "incomplete" in msg
  t5x_model_dir = tmp_path / "t5x_model"
  for step in (1000, 200):
    (t5x_model_dir / f"checkpoint_{step}").mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match=r"pass one step, e\.g\. .*checkpoint_1000"):
    resolve.load_model(str(t5x_model_dir))
  with pytest.raises(NotADirectoryError, match="is a file"):
    resolve.load_model(str(hf_dir / "config.json"))
  broken = _copy_without_weights(hf_dir, tmp_path / "broken_index")
  _write_index(
    broken / hf.SAFETENSORS_INDEX_NAME, {"model-00001-of-00002.safetensors": ["shared.weight"]}
  )
  with pytest.raises(FileNotFoundError, match="shards that are missing.*model-00001-of-00002"):
    resolve.load_model(str(broken))


def test_wrong_vocabulary_for_the_model_is_rejected(hf_dir, tmp_path):
  config = json.loads((hf_dir / "config.json").read_text())
  small = _copy_without_weights(hf_dir, tmp_path / "small_vocab")
  config["vocab_size"] = 300
  (small / "config.json").write_text(json.dumps(config))
  import safetensors.numpy

  sd = hf.read_hf_state_dict(hf_dir)
  vocab_rows = ("shared.weight", "lm_head.weight")
  sd = {k: np.ascontiguousarray(v[:300] if k in vocab_rows else v) for k, v in sd.items()}
  safetensors.numpy.save_file(sd, small / hf.SAFETENSORS_NAME)
  with pytest.raises(ValueError, match="32100 ids but the model's embedding has only 300 rows"):
    resolve.load_model(str(small))
  assert resolve.load_model(str(small), vocab_path="byte").config.vocab_size == 300
  # A ByT5 directory has no vocabulary file; its tokenizer_config.json names the byte tokenizer.
  for name in ("spiece.model", "tokenizer.json"):
    (small / name).unlink()
  (small / "tokenizer_config.json").write_text('{"tokenizer_class": "ByT5Tokenizer"}')
  assert isinstance(resolve.load_model(str(small)).vocab, seqio.ByteVocabulary)
  (small / "tokenizer_config.json").unlink()
  with pytest.raises(FileNotFoundError, match="no vocabulary .* pass --vocab PATH"):
    resolve.load_model(str(small))


def test_truncated_or_corrupt_safetensors_name_the_file(tmp_path, capsys):
  """A cut-off download is a one-line error naming the file, not a traceback or garbage."""
  from robust_prompt.checkpoints import hf
  from robust_prompt.cli import main as cli_main

  model = make_tiny_hf_t5(tmp_path / "m", "t5_1_1", None)
  weights = model / "model.safetensors"
  full = weights.read_bytes()
  weights.write_bytes(full[: len(full) // 2])
  with pytest.raises(ValueError, match="truncated"):
    hf.read_safetensors(weights)
  weights.write_bytes(full[:5])
  with pytest.raises(ValueError, match="not a safetensors file"):
    hf.read_safetensors(weights)
  requests = tmp_path / "in.jsonl"
  requests.write_text('{"inputs": "x", "targets": ["y"]}\n')
  argv = ["score", "--model", str(model), "--input", str(requests), "--output", str(tmp_path / "o")]
  assert cli_main.main(argv) == 1
  err = capsys.readouterr().err
  assert "model.safetensors" in err and "download it again" in err and "Traceback" not in err
