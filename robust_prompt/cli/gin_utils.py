"""gin handling for the CLI, following T5X: `--gin_file` (repeatable) and `--gin.NAME=value`.

Library code never imports gin (T5X's `train.py` pattern): the CLI registers library classes as
external configurables here, parses the user's gin files and bindings, and reads the macros it
needs (e.g. `MODEL_CONFIG`, bound by the model gin files in `gin_configs/models/`).
"""

from __future__ import annotations

import argparse
import logging
import pathlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
  pass

GIN_CONFIGS_DIR = pathlib.Path(__file__).resolve().parents[2] / "gin_configs"

# The macro a model gin file binds to its architecture: `MODEL_CONFIG = @T5Config()`.
MODEL_CONFIG_MACRO = "MODEL_CONFIG"

_REGISTERED = False


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


def register_configurables() -> None:
  """Registers the library classes that every gin file may reference (idempotent).

  `T5Config` and `DecoderConfig` are registered under their bare names so that model gin files
  read like T5X's: `T5Config.d_model = 512` and `MODEL_CONFIG = @T5Config()`.
  """
  global _REGISTERED
  if _REGISTERED:
    return
  import gin

  from robust_prompt.model.config import T5Config
  from robust_prompt.model.decoder_config import DecoderConfig

  gin.external_configurable(T5Config, name="T5Config")
  gin.external_configurable(DecoderConfig, name="DecoderConfig")
  _REGISTERED = True


def parse_gin(gin_files: Sequence[str], bindings: Sequence[str], search_paths: Sequence[str] = ()):
  """Parses gin files and bindings (after the caller registered its configurables).

  Bindings from an earlier call in the same process are cleared first: one command, one config.
  """
  import gin

  gin.clear_config()
  for path in [str(GIN_CONFIGS_DIR), *search_paths]:
    gin.add_config_file_search_path(path)
  # gin first tries every include as a Python-package resource and logs "ERROR ... Path not
  # found" for each miss before it finds the file on the search path: noise, not an error.
  quiet = _DropGinPathNotFound()
  logging.getLogger().addFilter(quiet)
  try:
    gin.parse_config_files_and_bindings(list(gin_files), list(bindings), finalize_config=False)
  except (OSError, ValueError, NameError, SyntaxError) as e:
    raise UserError(f"could not parse gin config: {e}") from e
  finally:
    logging.getLogger().removeFilter(quiet)
  return gin


class _DropGinPathNotFound(logging.Filter):
  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.levelno == logging.ERROR and str(record.msg).startswith("Path not found"))


def is_bound(binding: str) -> bool:
  """Whether gin holds a value for `binding` ("configurable.parameter")."""
  import gin

  try:
    gin.query_parameter(binding)
  except ValueError:
    return False
  return True


def model_prompt_format(binding: str) -> str | None:
  """The model file's PROMPT_FORMAT macro (models/alpaca_7b.gin: 'alpaca') where `binding`
  (evaluate.prompt_format / data.prompt_format) is not bound itself; else None."""
  if is_bound(binding):
    return None
  return query_macro("PROMPT_FORMAT")


def query_macro(name: str, default: Any = None) -> Any:
  """Returns the value of the gin macro `name` (evaluating `@fn()` references), or `default`."""
  import gin

  try:
    value = gin.query_parameter(f"%{name}")
  except ValueError:
    return default
  if isinstance(value, gin.config.ConfigurableReference) and value.evaluate:
    try:
      return value.scoped_configurable_fn()
    except (TypeError, ValueError) as e:
      raise UserError(f"gin macro {name} = {value!r} could not be evaluated: {e}") from e
  return value


def model_config_from_gin():
  """The model config (`T5Config` or `DecoderConfig`) bound to `MODEL_CONFIG`, or None."""
  from robust_prompt.model.config import T5Config
  from robust_prompt.model.decoder_config import DecoderConfig

  config = query_macro(MODEL_CONFIG_MACRO)
  if config is None:
    return None
  if not isinstance(config, (T5Config, DecoderConfig)):
    raise UserError(
      f"gin macro {MODEL_CONFIG_MACRO} must be a T5Config or DecoderConfig (e.g. "
      f"`{MODEL_CONFIG_MACRO} = @T5Config()`), got {type(config).__name__}: {config!r}"
    )
  return config
