"""`robust-prompt` entry point: dispatches to one module per sub-command.

Each sub-command lives in `robust_prompt/cli/<name>.py` and defines

  add_arguments(parser: argparse.ArgumentParser) -> None
  run(args: argparse.Namespace) -> int

Modules are imported lazily so that `robust-prompt --help` and `robust-prompt tasks` stay fast
(jax, tensorflow and torch are heavy to import).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from robust_prompt.cli import gin_utils

COMMANDS: dict[str, str] = {
  "score": "Score target strings with a model (teacher-forced log-likelihoods).",
  "eval": "Evaluate a model over (task x instruction) pairs and write a robustness report.",
  "train": "Train a soft prompt with paraphrase-alignment losses (model frozen).",
  "report": "Build summary.json and report.md/html from a per-instruction CSV.",
  "tasks": "List registered tasks, instruction counts per split and example counts.",
  "instructions": "Build observed instruction sets from FLAN/P3/NIV2/Alpaca; import, list, check.",
  "demo": "Run the offline demo: measure brittleness, train a prompt, measure again.",
  "convert": "Convert a Hugging Face or T5X checkpoint into our orbax format.",
  "aot": "Compile train/eval steps ahead of time for a mesh of fake devices; report memory.",
}


# Commands that run a model and may span several hosts.
DISTRIBUTED_COMMANDS = ("score", "eval", "train", "demo", "convert")


def _add_distributed_arguments(parser: argparse.ArgumentParser) -> None:
  group = parser.add_argument_group(
    "multi-host", "jax.distributed start-up (automatic on TPU VM pods and under SLURM)"
  )
  group.add_argument(
    "--distributed",
    choices=("auto", "on", "off"),
    default="auto",
    help="start jax.distributed: auto = when a TPU pod / SLURM job / coordinator is detected",
  )
  group.add_argument("--coordinator_address", default=None, help="host:port of process 0")
  group.add_argument("--num_processes", type=int, default=None, help="total number of processes")
  group.add_argument("--process_id", type=int, default=None, help="this process's id")


def _add_compilation_arguments(parser: argparse.ArgumentParser) -> None:
  from robust_prompt import compilation_cache

  parser.add_argument_group("compilation").add_argument(
    "--compilation_cache_dir",
    default=compilation_cache.default_dir(),
    help="keep compiled XLA programs in this directory (JAX's persistent compilation cache): a "
    "rerun with the same shapes loads them instead of compiling again; 'none' compiles without "
    f"a cache (default: ${compilation_cache.OUR_ENV_VAR}, else ${compilation_cache.ENV_VAR}, "
    f"else {compilation_cache.user_cache_dir()})",
  )


def _enable_compilation_cache(args: argparse.Namespace) -> None:
  from robust_prompt import compilation_cache

  if args.compilation_cache_dir and args.compilation_cache_dir.lower() != compilation_cache.OFF:
    try:
      compilation_cache.enable(args.compilation_cache_dir)
    except ValueError as e:
      if args.compilation_cache_dir != str(compilation_cache.user_cache_dir()):
        raise gin_utils.UserError(f"--compilation_cache_dir: {e}") from e
      # The default place (not asked for) is unusable, e.g. a read-only home: run uncached.
      print(f"robust-prompt {args.command}: warning: {e}; running without a cache", file=sys.stderr)


def _start_distributed(args: argparse.Namespace) -> None:
  from robust_prompt import distributed

  spec = distributed.DistributedSpec(
    mode=args.distributed,
    coordinator_address=args.coordinator_address,
    num_processes=args.num_processes,
    process_id=args.process_id,
  )
  try:
    distributed.maybe_initialize(spec)
  except ValueError as e:
    raise gin_utils.UserError(str(e)) from e


# Lines TensorFlow's C++ runtime prints at import (before its logging is configured, so that
# TF_CPP_MIN_LOG_LEVEL cannot silence them). They say nothing useful to a user of this tool.
_TF_IMPORT_NOISE = (
  "All log messages before absl::InitializeLog()",
  "oneDNN custom operations are on",
  "Could not find cuda drivers",
  "Unable to register cu",
  "This TensorFlow binary is optimized",
  "To enable the following instructions",
)


def _import_tensorflow_quietly() -> None:
  """Imports TensorFlow (seqio needs it) with its start-up chatter removed from stderr.

  Everything else TensorFlow prints while importing (a real error, say) is passed on unchanged.
  """
  import os
  import tempfile

  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile(mode="w+b") as captured:
    os.dup2(captured.fileno(), 2)
    try:
      import tensorflow  # noqa: F401
    except ImportError:
      pass  # the command that needs it reports the problem itself
    finally:
      os.dup2(saved, 2)
      os.close(saved)
    captured.seek(0)
    text = captured.read().decode("utf-8", "replace")
  kept = [line for line in text.splitlines() if not any(n in line for n in _TF_IMPORT_NOISE)]
  if kept:
    print("\n".join(kept), file=sys.stderr)


def _command_module(name: str):
  return importlib.import_module(f"robust_prompt.cli.{name}")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="robust-prompt",
    description="Instruction-robustness evaluation and soft-prompt alignment for T5 models.",
  )
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")
  for name, help_text in COMMANDS.items():
    p = sub.add_parser(name, help=help_text, description=help_text)
    if name == command:
      module = _command_module(name)
      module.add_arguments(p)
      if getattr(module, "USES_GIN", False):
        gin_utils.add_gin_arguments(p)
      if name in DISTRIBUTED_COMMANDS:
        _add_distributed_arguments(p)
        _add_compilation_arguments(p)
  return parser


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  command = argv[0] if argv and argv[0] in COMMANDS else None
  # T5X-style `--gin.NAME=value` flags are not argparse options: split them off first.
  argv, gin_bindings = gin_utils.split_gin_bindings(argv)
  parser = build_parser(command)
  args = parser.parse_args(argv)
  if args.command is None:
    parser.print_help()
    return 2
  args.gin_bindings = gin_bindings
  _show_library_logs(args.command)
  module = _command_module(args.command)
  if gin_bindings and not getattr(module, "USES_GIN", False):
    parser.error(f"`{args.command}` takes no --gin.NAME=value flags (got {gin_bindings[0]!r})")
  import signal

  def _terminate(signum, frame):
    raise _Terminated()

  # SIGTERM (a scheduler's pre-emption) ends the run as Ctrl-C does: finished work is on disk.
  try:
    previous = signal.signal(signal.SIGTERM, _terminate)
  except ValueError:  # not the main thread (an embedding program): leave signals alone
    previous = None
  try:
    if args.command in DISTRIBUTED_COMMANDS:
      _import_tensorflow_quietly()
      _start_distributed(args)
      _enable_compilation_cache(args)
    return int(module.run(args) or 0)
  except gin_utils.UserError as e:
    print(f"robust-prompt {args.command}: error: {e}", file=sys.stderr)
    return 1
  except OSError as e:
    import errno

    if e.errno != errno.ENOSPC:
      raise
    print(
      f"robust-prompt {args.command}: error: no space left on the device ({e.filename or e}); "
      "free some space and rerun the same command to resume",
      file=sys.stderr,
    )
    return 1
  except KeyboardInterrupt:
    print(
      f"robust-prompt {args.command}: interrupted; rerun the same command to resume",
      file=sys.stderr,
    )
    return 130
  except _Terminated:
    print(
      f"robust-prompt {args.command}: terminated; rerun the same command to resume", file=sys.stderr
    )
    return 143
  finally:
    if previous is not None:
      signal.signal(signal.SIGTERM, previous)


class _StderrHandler(logging.Handler):
  """Writes to the current `sys.stderr` (looked up per record, so captured streams work)."""

  def __init__(self, command: str):
    super().__init__(logging.INFO)
    self.command = command

  def emit(self, record: logging.LogRecord) -> None:
    level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
    try:
      sys.stderr.write(f"robust-prompt {self.command}: {level}{record.getMessage()}\n")
    except Exception:  # noqa: BLE001 - logging must never end a run
      self.handleError(record)


def _show_library_logs(command: str) -> None:
  """Our library's log records (INFO and up) reach the console as one plain line each.

  Other libraries' loggers are left at Python's default (warnings only), and a program that
  configured logging itself (handlers on the root logger) keeps its own set-up.
  """
  logger = logging.getLogger("robust_prompt")
  if logging.getLogger().handlers:
    return
  for h in list(logger.handlers):
    if isinstance(h, _StderrHandler):
      logger.removeHandler(h)
  logger.addHandler(_StderrHandler(command))
  logger.setLevel(logging.INFO)


class _Terminated(BaseException):
  """SIGTERM, raised in the main thread (a BaseException, like KeyboardInterrupt)."""


INTERRUPTED_CODES = (130, 143)


def console_main() -> int:
  """The `robust-prompt` executable: `main`, and an interrupted run exits without teardown.

  A command that runs a model first restarts itself, where that helps, so that glibc backs
  XLA:CPU's temporaries with huge pages (`host_memory.reexec_with_huge_pages`).

  Ctrl-C or SIGTERM during an XLA compilation leaves compiler threads running; the interpreter's
  normal shutdown could then crash (a segfault, or a re-raised SIGINT) after the one-line
  message. Everything a rerun resumes from is already on disk when `main` returns (results and
  checkpoints are written atomically, in `finally` blocks), so the process ends right there.
  """
  if len(sys.argv) > 1 and sys.argv[1] in DISTRIBUTED_COMMANDS:
    from robust_prompt import host_memory

    try:  # first: it restarts the program with huge pages for XLA:CPU's temporaries
      host_memory.reexec_with_huge_pages()
    except ValueError as e:
      print(f"robust-prompt {sys.argv[1]}: error: {e}", file=sys.stderr)
      return 1
  code = main()
  if code in INTERRUPTED_CODES:
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
  return code


if __name__ == "__main__":
  sys.exit(console_main())
