"""gin_configs/runs/ and gin_configs/experiments/: contract headers, parsing, the study preset.

`runs/sun2024.gin` must bind the settings of the robustness study it reproduces (Sun et al. 2023):
inputs cut at 512 tokens, greedy_prefix scoring, bfloat16 activations, and nothing else that
runs/eval.gin does not already bind.
"""

import pathlib

import gin
import pytest
from helpers import gin_bindings, parse_gin_or_skip

from robust_prompt.cli import common, gin_utils
from robust_prompt.cli import eval as eval_cli

GIN_DIR = gin_utils.GIN_CONFIGS_DIR
RUN_FILES = sorted((GIN_DIR / "runs").glob("*.gin"))
EXPERIMENT_FILES = sorted((GIN_DIR / "experiments").glob("*.gin"))
STUDY_FILES = sorted((GIN_DIR / "experiments").glob("sun2024_*.gin"))
# What runs/sun2024.gin changes relative to runs/eval.gin.
STUDY_SETTINGS = {
  "evaluate.score_mode": "'greedy_prefix'",
  "evaluate.max_input_length": "512",
  "T5Config.dtype": "'bfloat16'",
  "evaluate.shuffle_options": "[('bigbench:conceptual_combinations', 42)]",
}


# Every test parses with the gin names the CLI registers (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("cli_gin")


def _relative(path: pathlib.Path) -> str:
  return str(path.relative_to(GIN_DIR))


@pytest.mark.parametrize("path", RUN_FILES + EXPERIMENT_FILES, ids=_relative)
def test_contract_header_andparse_gin_or_skip(path):
  text = path.read_text()
  assert text.startswith("# Contract:"), f"{path.name} must open with its contract comment"
  header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
  for part in ("# Provides:", "# Requires:", "# Commonly overridden:"):
    assert part in header, f"{_relative(path)}: the contract header has no '{part}'"
  parse_gin_or_skip(_relative(path))
  if "evaluate.score_mode" in gin_bindings():
    eval_cli.configured_settings()()  # the evaluate.* bindings are valid EvalSettings


def test_study_preset_binds_the_study_settings():
  parse_gin_or_skip("runs/sun2024.gin")
  settings = eval_cli.configured_settings()()
  assert settings.score_mode == "greedy_prefix"
  assert settings.max_input_length == 512 < common.DEFAULT_MAX_INPUT_LENGTH
  assert gin.query_parameter("T5Config.dtype") == "bfloat16"
  assert settings.shuffle_options == (("bigbench:conceptual_combinations", 42),)
  # Everything else is runs/eval.gin's: the preset changes only what the study did differently.
  preset = gin_bindings()
  parse_gin_or_skip("runs/eval.gin")
  base = gin_bindings()
  differing = {
    k: preset.get(k) for k in preset.keys() | base.keys() if preset.get(k) != base.get(k)
  }
  assert differing == STUDY_SETTINGS


def test_study_preset_must_follow_the_model_file():
  # Model files bind T5Config.dtype = 'float32'; the later binding wins (the contract's order).
  parse_gin_or_skip("models/flan_t5_xl.gin", "runs/sun2024.gin")
  assert gin_utils.model_config_from_gin().dtype == "bfloat16"
  parse_gin_or_skip("runs/sun2024.gin", "models/flan_t5_xl.gin")
  assert gin_utils.model_config_from_gin().dtype == "float32"


def test_one_study_experiment_per_model():
  names = {p.name for p in STUDY_FILES}
  assert names == {"sun2024_flan_t5_xl.gin", "sun2024_t0pp.gin", "sun2024_alpaca_7b.gin"}


@pytest.mark.parametrize("path", STUDY_FILES, ids=_relative)
def test_study_experiments_keep_the_preset(path):
  parse_gin_or_skip(_relative(path))
  settings = eval_cli.configured_settings()()
  assert (settings.score_mode, settings.max_input_length) == ("greedy_prefix", 512)
  # The model actually runs in bfloat16, whichever family's config the model file binds.
  assert gin_utils.query_macro(gin_utils.MODEL_CONFIG_MACRO).dtype == "bfloat16"
