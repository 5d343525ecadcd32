"""The `robust-prompt` dispatcher (robust_prompt/cli/main.py): sub-commands, gin flags, errors."""

import argparse
import types

import pytest

from robust_prompt.cli import main as cli_main
from robust_prompt.cli.gin_utils import UserError


def _fake_command(uses_gin: bool, behaviour):
  def add_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("--value", default="x")

  return types.SimpleNamespace(add_arguments=add_arguments, run=behaviour, USES_GIN=uses_gin)


@pytest.fixture
def fake_commands(monkeypatch):
  """Replaces the sub-command modules so the dispatcher is tested on its own."""
  calls = []

  def record(args):
    calls.append(args)
    return 0

  def fail(args):
    raise UserError("the input is wrong: do this instead")

  modules = {
    "score": _fake_command(True, record),
    "tasks": _fake_command(False, record),
    "report": _fake_command(False, fail),
  }
  monkeypatch.setattr(cli_main, "_command_module", lambda name: modules[name])
  return calls


def test_no_command_prints_help(capsys):
  assert cli_main.main([]) == 2
  assert "score" in capsys.readouterr().out


def test_gin_flags_reach_gin_commands(fake_commands):
  code = cli_main.main(
    [
      "score",
      "--value",
      "v",
      "--gin_file",
      "a.gin",
      "--gin.T5Config.d_model=8",
      "--gin_file",
      "b.gin",
    ]
  )
  assert code == 0
  (args,) = fake_commands
  assert args.value == "v"
  assert args.gin_file == ["a.gin", "b.gin"]
  assert args.gin_bindings == ["T5Config.d_model = 8"]
  assert args.gin_search_paths == []


def test_gin_flags_rejected_by_other_commands(fake_commands, capsys):
  with pytest.raises(SystemExit) as e:
    cli_main.main(["tasks", "--gin.X=1"])
  assert e.value.code == 2
  assert "takes no --gin.NAME=value flags" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    cli_main.main(["tasks", "--gin_file", "a.gin"])  # not an option of a non-gin command


def test_user_error_exits_1_without_traceback(fake_commands, capsys):
  assert cli_main.main(["report"]) == 1
  err = capsys.readouterr().err
  assert "robust-prompt report: error: the input is wrong: do this instead" in err
  assert "Traceback" not in err


def test_real_score_command_parses_its_flags(capsys):
  parser = cli_main.build_parser("score")
  args = parser.parse_args(
    ["score", "--model", "m", "--input", "i", "--output", "o", "--mesh", "data=2,model=4"]
  )
  assert (args.model, args.mesh, args.batch_size, args.dtype) == (
    "m",
    "data=2,model=4",
    32,
    "float32",
  )
  with pytest.raises(SystemExit):
    parser.parse_args(
      ["score", "--model", "m", "--input", "i", "--output", "o", "--batch_size", "0"]
    )
  with pytest.raises(SystemExit):
    parser.parse_args(["score", "--input", "i", "--output", "o"])  # --model is required
  assert "--model" in capsys.readouterr().err
