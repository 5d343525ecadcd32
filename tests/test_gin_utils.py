"""gin flag handling of the CLI (robust_prompt/cli/gin_utils.py)."""

import pytest

from robust_prompt.cli import gin_utils
from robust_prompt.cli.gin_utils import UserError
from robust_prompt.model.config import T5Config


def test_split_gin_bindings_t5x_style():
  rest, bindings = gin_utils.split_gin_bindings(
    [
      "score",
      "--model",
      "m",
      "--gin.T5Config.d_model=64",
      "--gin.MODEL_CONFIG",
      "@T5Config()",
      "--gin_file",
      "models/x.gin",
      "--gin.NAME='a=b'",
    ]
  )
  assert rest == ["score", "--model", "m", "--gin_file", "models/x.gin"]
  assert bindings == ["T5Config.d_model = 64", "MODEL_CONFIG = @T5Config()", "NAME = 'a=b'"]


def test_split_gin_bindings_needs_a_value():
  with pytest.raises(SystemExit, match="needs a value"):
    gin_utils.split_gin_bindings(["--gin.T5Config.d_model"])


def test_register_configurables_is_idempotent():
  gin_utils.register_configurables()
  gin_utils.register_configurables()


def test_model_config_from_bindings():
  gin_utils.register_configurables()
  gin_utils.parse_gin(
    [],
    [
      "T5Config.d_model = 64",
      "T5Config.num_heads = 2",
      "T5Config.feed_forward_proj = 'relu'",
      "MODEL_CONFIG = @T5Config()",
    ],
  )
  config = gin_utils.model_config_from_gin()
  assert isinstance(config, T5Config)
  assert (config.d_model, config.num_heads, config.feed_forward_proj) == (64, 2, "relu")
  assert config.d_ff == T5Config().d_ff  # unbound fields keep their defaults


def test_model_config_from_gin_file_with_override(tmp_path):
  gin_utils.register_configurables()
  gin_file = tmp_path / "tiny.gin"
  gin_file.write_text(
    "# Provides MODEL_CONFIG for a tiny model.\n"
    "T5Config.d_model = 32\n"
    "T5Config.num_encoder_layers = 2\n"
    "MODEL_CONFIG = @T5Config()\n"
  )
  gin_utils.parse_gin([str(gin_file)], ["T5Config.num_encoder_layers = 3"])
  config = gin_utils.model_config_from_gin()
  assert (config.d_model, config.num_encoder_layers) == (32, 3)


def test_gin_file_found_through_search_path(tmp_path):
  gin_utils.register_configurables()
  (tmp_path / "models").mkdir()
  (tmp_path / "models" / "mine.gin").write_text(
    "T5Config.d_model = 48\nMODEL_CONFIG = @T5Config()\n"
  )
  gin_utils.parse_gin(["models/mine.gin"], [], [str(tmp_path)])
  assert gin_utils.model_config_from_gin().d_model == 48


def test_no_model_config_is_none_and_config_is_reset_between_parses():
  gin_utils.register_configurables()
  gin_utils.parse_gin([], ["MODEL_CONFIG = @T5Config()"])
  assert gin_utils.model_config_from_gin() is not None
  gin_utils.parse_gin([], [])
  assert gin_utils.model_config_from_gin() is None


def test_bad_gin_is_a_user_error(tmp_path):
  gin_utils.register_configurables()
  with pytest.raises(UserError, match="could not parse gin config"):
    gin_utils.parse_gin([str(tmp_path / "missing.gin")], [])
  with pytest.raises(UserError, match="could not parse gin config"):
    gin_utils.parse_gin([], ["NotAConfigurable.x = 1"])
  gin_utils.parse_gin([], ["T5Config.feed_forward_proj = 'swish'", "MODEL_CONFIG = @T5Config()"])
  with pytest.raises(UserError, match="feed_forward_proj"):
    gin_utils.model_config_from_gin()
  gin_utils.parse_gin([], ["MODEL_CONFIG = 3"])
  with pytest.raises(UserError, match="must be a T5Config"):
    gin_utils.model_config_from_gin()


def test_query_macro_returns_plain_values_and_defaults():
  gin_utils.parse_gin([], ["LENGTH = 7"])
  assert gin_utils.query_macro("LENGTH") == 7
  assert gin_utils.query_macro("ABSENT", default="d") == "d"
