"""The `robust-prompt` dispatcher (robust_prompt/cli/main.py): sub-commands, gin flags, errors."""

import argparse
import sys
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


def test_the_executable_restarts_with_huge_pages_for_model_commands_only(monkeypatch, capsys):
  from robust_prompt import host_memory

  restarts = []
  monkeypatch.setattr(host_memory, "reexec_with_huge_pages", lambda: restarts.append(1))
  monkeypatch.setattr(cli_main, "main", lambda: 0)
  for command, expected in [("tasks", []), ("report", []), ("eval", [1]), ("train", [1, 1])]:
    monkeypatch.setattr(sys, "argv", ["robust-prompt", command])
    assert cli_main.console_main() == 0
    assert restarts == expected, command


def test_a_bad_allocator_setting_is_refused_before_the_command_runs(monkeypatch, capsys):
  monkeypatch.setattr(cli_main, "main", lambda: pytest.fail("ran the command"))
  monkeypatch.setattr(sys, "argv", ["robust-prompt", "score"])
  monkeypatch.setenv("ROBUST_PROMPT_MALLOC", "tcmalloc")
  assert cli_main.console_main() == 1
  err = capsys.readouterr().err
  assert "robust-prompt score: error: $ROBUST_PROMPT_MALLOC='tcmalloc': expected" in err


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
    None,  # unset: the gin T5Config.dtype when a model gin file is given, else float32
  )
  with pytest.raises(SystemExit):
    parser.parse_args(
      ["score", "--model", "m", "--input", "i", "--output", "o", "--batch_size", "0"]
    )
  with pytest.raises(SystemExit):
    parser.parse_args(["score", "--input", "i", "--output", "o"])  # --model is required
  assert "--model" in capsys.readouterr().err


def test_mesh_and_dtype_come_from_gin_when_flags_are_unset(tiny_hf_dir):
  import argparse

  from robust_prompt.cli import common, gin_utils

  gin_utils.register_configurables()
  gin_utils.parse_gin(
    ["mesh/model_parallel_2d.gin"], ["MESH_DATA = 2", "MESH_MODEL = 4"], search_paths=()
  )
  args = argparse.Namespace(mesh=None, gin_file=["mesh/model_parallel_2d.gin"], gin_bindings=[])
  assert dict(common.mesh_from_args(args).shape) == {"data": 2, "model": 4}
  args.mesh = "data=8,model=1"  # an explicit flag wins over gin
  assert dict(common.mesh_from_args(args).shape) == {"data": 8, "model": 1}

  # --dtype unset: the gin T5Config.dtype applies (a stored HF config says float32).
  bindings = [f"T5Config.{k} = {v!r}" for k, v in _tiny_arch(tiny_hf_dir).items()]
  gin_utils.parse_gin([], [*bindings, "T5Config.dtype = 'bfloat16'", "MODEL_CONFIG = @T5Config()"])
  config = gin_utils.model_config_from_gin()
  assert config is not None and config.dtype == "bfloat16"
  args = argparse.Namespace(
    model=str(tiny_hf_dir), vocab=None, dtype=None, gin_file=[], gin_bindings=bindings
  )
  assert common.model_from_args(args).config.dtype == "bfloat16"
  args.dtype = "float32"  # an explicit flag wins over gin
  assert common.model_from_args(args).config.dtype == "float32"


def _tiny_arch(hf_dir) -> dict:
  import dataclasses
  import json

  from robust_prompt.model.config import T5Config

  config = T5Config.from_hf_dict(json.loads((hf_dir / "config.json").read_text()))
  skip = {"dtype", "param_dtype"}
  return {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name not in skip}


def test_compilation_cache_flag_and_environment(fake_commands, monkeypatch, tmp_path):
  from robust_prompt import compilation_cache

  enabled = []
  monkeypatch.setattr(compilation_cache, "enable", lambda path: enabled.append(path))
  monkeypatch.delenv(compilation_cache.ENV_VAR, raising=False)
  monkeypatch.setenv(compilation_cache.OUR_ENV_VAR, "none")  # what conftest sets for tests
  assert cli_main.main(["score"]) == 0
  assert enabled == []
  monkeypatch.delenv(compilation_cache.OUR_ENV_VAR)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert cli_main.main(["score"]) == 0  # on by default, in the user cache directory
  assert enabled == [str(tmp_path / "xdg" / "robust_prompt" / "xla")]
  assert cli_main.main(["score", "--compilation_cache_dir", "none"]) == 0  # off when asked
  assert cli_main.main(["score", "--compilation_cache_dir", str(tmp_path / "a")]) == 0
  monkeypatch.setenv(compilation_cache.ENV_VAR, str(tmp_path / "b"))
  assert cli_main.main(["score"]) == 0  # JAX's own variable wins over the user directory
  monkeypatch.setenv(compilation_cache.OUR_ENV_VAR, str(tmp_path / "c"))
  assert cli_main.main(["score"]) == 0  # ... and ours over JAX's
  assert enabled[1:] == [str(tmp_path / p) for p in ("a", "b", "c")]
  assert cli_main.main(["tasks"]) == 0  # a command that compiles nothing has no such flag
  assert len(enabled) == 4


def test_unwritable_compilation_cache_dir_is_a_clear_error(fake_commands, capsys, tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  assert cli_main.main(["score", "--compilation_cache_dir", str(blocker / "cache")]) == 1
  err = capsys.readouterr().err
  assert "--compilation_cache_dir" in err and "is not writable" in err and "Traceback" not in err
  assert fake_commands == []  # nothing ran


def test_unusable_default_cache_dir_is_a_warning(fake_commands, capsys, monkeypatch, tmp_path):
  from robust_prompt import compilation_cache

  blocker = tmp_path / "a_file"
  blocker.write_text("")
  monkeypatch.delenv(compilation_cache.OUR_ENV_VAR)
  monkeypatch.delenv(compilation_cache.ENV_VAR, raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # cannot hold a directory
  assert cli_main.main(["score"]) == 0
  assert "running without a cache" in capsys.readouterr().err


def test_compilation_cache_keeps_fast_compiles(tmp_path):
  """A program that compiles in milliseconds is written to the cache (JAX alone keeps only
  those over 1 s), and a second process finds it there."""
  import subprocess
  import sys

  code = (
    "import sys, jax, jax.numpy as jnp\n"
    "from robust_prompt import compilation_cache\n"
    "compilation_cache.enable(sys.argv[1])\n"
    "print(float(jax.jit(lambda x: jnp.sin(x) * 3)(jnp.float32(0.5))))\n"
  )
  cache = tmp_path / "cache"
  outputs = []
  for _ in range(2):
    proc = subprocess.run(
      [sys.executable, "-c", code, str(cache)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    outputs.append(proc.stdout.strip())
    entries = sorted(p.name for p in cache.iterdir() if not p.name.startswith("."))
    assert entries, "nothing was cached"
    if len(outputs) == 1:
      first = entries
  assert outputs[0] == outputs[1]
  assert entries == first  # the second run compiled nothing new: it loaded the entry


@pytest.mark.parametrize(
  "raised, code, word", [(KeyboardInterrupt, 130, "interrupted"), ("sigterm", 143, "terminated")]
)
def test_interrupt_and_sigterm_end_with_one_line(monkeypatch, capsys, raised, code, word):
  """Ctrl-C and SIGTERM: one line saying how to resume, exit 130 / 143, no traceback."""
  import os
  import signal

  from robust_prompt.cli import main as cli_main
  from robust_prompt.cli import tasks as tasks_cli

  def run(args):
    if raised == "sigterm":
      os.kill(os.getpid(), signal.SIGTERM)
    else:
      raise raised()

  monkeypatch.setattr(tasks_cli, "run", run)
  assert cli_main.main(["tasks"]) == code
  err = capsys.readouterr().err.strip().splitlines()
  assert err == [f"robust-prompt tasks: {word}; rerun the same command to resume"]
  assert signal.getsignal(signal.SIGTERM) is not cli_main._Terminated  # handler restored


@pytest.mark.parametrize("code, exits_at_once", [(130, True), (143, True), (0, False), (1, False)])
def test_executable_skips_teardown_after_an_interrupt(monkeypatch, code, exits_at_once):
  """An interrupted run ends with os._exit (no interpreter teardown racing XLA's compiler
  threads: that teardown segfaulted after Ctrl-C during train's first compilation)."""
  import os

  from robust_prompt.cli import main as cli_main

  exited = []
  monkeypatch.setattr(cli_main, "main", lambda: code)
  monkeypatch.setattr(os, "_exit", exited.append)
  assert cli_main.console_main() == code
  assert exited == ([code] if exits_at_once else [])


def test_console_script_is_the_executable_entry():
  import importlib.metadata

  scripts = importlib.metadata.entry_points(group="console_scripts")
  (entry,) = [e for e in scripts if e.name == "robust-prompt"]
  assert entry.value == "robust_prompt.cli.main:console_main"


def test_disk_full_is_one_resumable_line(monkeypatch, capsys):
  import errno

  from robust_prompt.cli import main as cli_main
  from robust_prompt.cli import tasks as tasks_cli

  def run(args):
    raise OSError(errno.ENOSPC, "No space left on device", "/data/out/results.jsonl")

  monkeypatch.setattr(tasks_cli, "run", run)
  assert cli_main.main(["tasks"]) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "no space left" in err[0] and "rerun the same command" in err[0]
