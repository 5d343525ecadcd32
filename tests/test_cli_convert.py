"""`robust-prompt convert` end to end: tiny HF model and the real T5X checkpoint -> load_model."""

import jax
import numpy as np
from conftest import make_tiny_hf_t5

from robust_prompt.checkpoints import resolve
from robust_prompt.cli import main as cli

TINY_T5X_GIN = """\
# Architecture of ../shared/fixtures/t5x_t5_1_1_tiny (T5 1.1, gated-GELU, untied logits).
# Provides: MODEL_CONFIG. Requires: nothing.
MODEL_CONFIG = @T5Config()
T5Config.vocab_size = 32128
T5Config.d_model = 4
T5Config.num_heads = 2
T5Config.head_dim = 2
T5Config.d_ff = 8
T5Config.num_encoder_layers = 2
T5Config.num_decoder_layers = 2
T5Config.relative_attention_num_buckets = 4
T5Config.relative_attention_max_distance = 8
T5Config.feed_forward_proj = "gated-gelu"
T5Config.tie_word_embeddings = False
"""


def _assert_same(a, b):
  flat_b = dict(jax.tree_util.tree_flatten_with_path(b)[0])
  flat_a = jax.tree_util.tree_flatten_with_path(a)[0]
  assert len(flat_a) == len(flat_b) > 0
  for path, x in flat_a:
    np.testing.assert_array_equal(np.asarray(x), np.asarray(flat_b[path]))


def test_convert_tiny_hf_model(tmp_path, spiece_path, capsys):
  hf_dir = make_tiny_hf_t5(tmp_path / "hf", "t5_1_0", spiece_path, seed=3)
  out = tmp_path / "converted"
  assert cli.main(["convert", "--model", str(hf_dir), "--output_dir", str(out)]) == 0
  printed = capsys.readouterr().out
  assert f"wrote {out}" in printed and "spiece.model" in printed and "tied output layer" in printed
  converted = resolve.load_model(str(out))
  original = resolve.load_model(str(hf_dir))
  assert converted.config == original.config
  assert converted.vocab.encode("Hello café") == original.vocab.encode("Hello café")
  _assert_same(converted.params, original.params)
  # A second conversion into the same directory needs --overwrite.
  assert cli.main(["convert", "--model", str(hf_dir), "--output_dir", str(out)]) == 1
  assert "--overwrite" in capsys.readouterr().err
  assert cli.main(["convert", "--model", str(hf_dir), "--output_dir", str(out), "--overwrite"]) == 0


def test_convert_real_t5x_checkpoint(tmp_path, t5x_tiny_checkpoint, spiece_path, capsys):
  gin_dir = tmp_path / "gin"
  gin_dir.mkdir()
  (gin_dir / "tiny_t5x.gin").write_text(TINY_T5X_GIN)
  out = tmp_path / "from_t5x"
  argv = ["convert", "--model", str(t5x_tiny_checkpoint), "--output_dir", str(out)]
  # Without the architecture the error says which gin file to pass.
  assert cli.main([*argv, "--vocab", str(spiece_path)]) == 1
  assert "--gin_file gin_configs/models/<size>.gin" in capsys.readouterr().err
  code = cli.main(
    [
      *argv,
      "--vocab",
      str(spiece_path),
      "--gin_search_paths",
      str(gin_dir),
      "--gin_file",
      "tiny_t5x.gin",
    ]
  )
  assert code == 0, capsys.readouterr().err
  assert "untied output layer" in capsys.readouterr().out
  converted = resolve.load_model(str(out))
  assert (converted.config.d_model, converted.config.d_ff) == (4, 8)
  assert converted.vocab.vocab_size == 32100
  direct = resolve.load_model(
    str(t5x_tiny_checkpoint), config=converted.config, vocab_path=str(spiece_path)
  )
  _assert_same(converted.params, direct.params)


def test_convert_reports_bad_models(tmp_path, capsys):
  empty = tmp_path / "empty"
  empty.mkdir()
  for model, message in [
    (str(tmp_path / "does" / "not" / "exist"), "no such file or directory"),
    (str(empty), "no recognised checkpoint"),
  ]:
    code = cli.main(["convert", "--model", model, "--output_dir", str(tmp_path / "o")])
    assert code == 1
    err = capsys.readouterr().err
    assert message in err and model in err
  assert not (tmp_path / "o").exists()
