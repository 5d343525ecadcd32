"""gin handling for the CLI, following T5X: `--gin_file` (repeatable) and `--gin.NAME=value`."""

from __future__ import annotations

import argparse
import pathlib
from collections.abc import Sequence

GIN_CONFIGS_DIR = pathlib.Path(__file__).resolve().parents[2] / "gin_configs"


class UserError(Exception):
  """A problem with the user's input; printed without a traceback and exits with status 1."""


def split_gin_bindings(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """Separates `--gin.NAME=value` flags (T5X style) from the other arguments.

  `--gin.NAME=value` becomes the binding `NAME = value`; `--gin.NAME value` is accepted too.
  """
  rest: list[str] = []
  bindings: list[str] = []
  i = 0
  argv = list(argv)
  while i < len(argv):
    arg = argv[i]
    if arg.startswith("--gin.") and not arg.startswith("--gin_"):
      body = arg[len("--gin.") :]
      if "=" in body:
        name, value = body.split("=", 1)
      elif i + 1 < len(argv):
        name, value = body, argv[i + 1]
        i += 1
      else:
        raise SystemExit(f"robust-prompt: {arg} needs a value: --gin.NAME=VALUE")
      bindings.append(f"{name} = {value}")
    else:
      rest.append(arg)
    i += 1
  return rest, bindings


def add_gin_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
    "--gin_file",
    action="append",
    default=[],
    help="gin file to parse (repeatable); relative paths are also looked up in gin_configs/",
  )
  parser.add_argument(
    "--gin_search_paths",
    action="append",
    default=[],
    help="extra directories in which gin files and their includes are looked up",
  )


def parse_gin(gin_files: Sequence[str], bindings: Sequence[str], search_paths: Sequence[str] = ()):
  """Parses gin files and bindings (after the caller registered its configurables)."""
  import gin

  for path in [str(GIN_CONFIGS_DIR), *search_paths]:
    gin.add_config_file_search_path(path)
  try:
    gin.parse_config_files_and_bindings(list(gin_files), list(bindings), finalize_config=False)
  except (OSError, ValueError) as e:
    raise UserError(f"could not parse gin config: {e}") from e
  return gin
