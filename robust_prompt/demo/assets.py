"""Where the committed demo files live (package data under `robust_prompt/demo/assets/`)."""

from __future__ import annotations

import json
import pathlib

ASSETS_DIR = pathlib.Path(__file__).resolve().parent / "assets"
MODEL_DIR_NAME = "model"
BUILD_INFO = "demo_build.json"  # beside the checkpoint: recipe, digests, measured accuracies


def model_dir() -> pathlib.Path:
  """The committed demo checkpoint (our orbax format: `robust-prompt eval --model <this>`).

  Raises:
    FileNotFoundError: the package was installed without its data files.
  """
  path = ASSETS_DIR / MODEL_DIR_NAME
  if not (path / "robust_prompt.json").is_file():
    raise FileNotFoundError(
      f"{path}: the demo model is missing (package data not installed?); rebuild it with "
      "`python scripts/build_demo_model.py` or reinstall robust-prompt"
    )
  return path


def build_info(directory: str | pathlib.Path | None = None) -> dict:
  """The build record written next to the checkpoint by `build.build_model`."""
  path = pathlib.Path(directory) if directory else model_dir()
  return json.loads((path / BUILD_INFO).read_text(encoding="utf-8"))
