"""tpu_scripts/: syntax (bash -n), shellcheck, and what the scripts actually run.

`gcloud`, `srun` and `sbatch` are replaced by fakes on PATH that record their arguments, so the
tests check the real command lines (quoting of gin bindings included) without a cloud or cluster.
The experiment scripts are run with LAUNCHER=local DRY_RUN=1 and their command lines are parsed by
the real `robust-prompt` argument parser, with every gin file checked to exist.
"""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import shutil
import stat
import subprocess
import sys
import textwrap

import pytest

from robust_prompt.cli import gin_utils, main

REPO = pathlib.Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "tpu_scripts"
ALL_SCRIPTS = sorted([*SCRIPTS.rglob("*.sh"), *SCRIPTS.rglob("*.sbatch")])
EXPERIMENTS = sorted(p for p in (SCRIPTS / "experiments").glob("*.sh") if p.name != "common.sh")


def test_there_are_scripts():
  names = {p.name for p in ALL_SCRIPTS}
  assert {"setup_pod.sh", "launch.sh", "logs.sh", "cleanup.sh", "slurm_gpu.sbatch"} <= names
  assert len(EXPERIMENTS) >= 5


@pytest.mark.parametrize("script", ALL_SCRIPTS, ids=lambda p: str(p.relative_to(SCRIPTS)))
def test_bash_syntax_and_executable(script):
  subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
  if script.name != "common.sh":
    assert script.stat().st_mode & stat.S_IXUSR, f"{script} is not executable (chmod +x)"


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_clean():
  proc = subprocess.run(
    ["shellcheck", "-x", *map(str, ALL_SCRIPTS)],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 0, proc.stdout + proc.stderr


# -- fakes ---------------------------------------------------------------------------------------


def _fake_bin(tmp_path: pathlib.Path, *names: str) -> dict[str, str]:
  """Fake executables that append their argv (JSON) to calls.jsonl; returns the environment."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir(exist_ok=True)
  log = tmp_path / "calls.jsonl"
  for name in names:
    path = bin_dir / name
    path.write_text(
      textwrap.dedent(f"""\
        #!{sys.executable}
        import json, os, sys
        with open({str(log)!r}, "a") as f:
          f.write(json.dumps([os.path.basename(sys.argv[0]), *sys.argv[1:]]) + "\\n")
        """)
    )
    path.chmod(0o755)
  env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
  env.pop("XLA_FLAGS", None)
  return env


def _calls(tmp_path: pathlib.Path) -> list[list[str]]:
  log = tmp_path / "calls.jsonl"
  return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _run(args, env, **kw) -> subprocess.CompletedProcess:
  return subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, cwd=REPO, **kw)


def _remote_command(call: list[str]) -> str:
  return call[call.index("--command") + 1]


def test_pod_scripts_need_tpu_name(tmp_path):
  env = _fake_bin(tmp_path, "gcloud")
  env.pop("TPU_NAME", None)
  proc = _run([str(SCRIPTS / "launch.sh"), "r", "eval"], env)
  assert proc.returncode != 0 and "set TPU_NAME" in proc.stderr
  assert _calls(tmp_path) == []


def test_launch_runs_the_same_quoted_command_on_all_workers(tmp_path):
  env = _fake_bin(tmp_path, "gcloud")
  env.update(TPU_NAME="pod", ZONE="us-central2-b", PROJECT="proj")
  binding = "--gin.evaluate.score_mode='greedy_prefix'"
  proc = _run([str(SCRIPTS / "launch.sh"), "run1", "eval", "--model", "a b", binding], env)
  assert proc.returncode == 0, proc.stderr
  start, stream = _calls(tmp_path)
  assert start[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod"]
  assert "--worker=all" in start and start[-4:] == ["--zone", "us-central2-b", "--project", "proj"]
  remote = _remote_command(start)
  subprocess.run(["bash", "-n", "-c", remote], check=True, timeout=30)
  line = next(ln for ln in remote.splitlines() if "nohup robust-prompt" in ln)
  # The worker's shell sees exactly the arguments given here.
  words = shlex.split(line.split("nohup ", 1)[1].split(" >", 1)[0])
  assert words == ["robust-prompt", "eval", "--model", "a b", binding]
  assert "--worker=0" in stream and "tail -n +1 -F" in _remote_command(stream)


def test_launch_rejects_unknown_commands_and_bad_run_names(tmp_path):
  env = _fake_bin(tmp_path, "gcloud")
  env.update(TPU_NAME="pod", ZONE="z")
  assert _run([str(SCRIPTS / "launch.sh"), "r", "demo"], env).returncode == 2
  assert _run([str(SCRIPTS / "launch.sh"), "r/../x", "eval"], env).returncode == 2
  assert _calls(tmp_path) == []


@pytest.mark.parametrize("script", ["cleanup.sh", "logs.sh"])
def test_remote_commands_are_valid_shell(tmp_path, script):
  env = _fake_bin(tmp_path, "gcloud")
  env.update(TPU_NAME="pod", ZONE="z")
  args = [str(SCRIPTS / script)] + (["run1", "all"] if script == "logs.sh" else [])
  assert _run(args, env).returncode == 0
  (call,) = _calls(tmp_path)
  remote = _remote_command(call)
  subprocess.run(["bash", "-n", "-c", remote], check=True, timeout=30)
  if script == "cleanup.sh":
    # The pattern must not match the remote shell running this command line itself.
    assert "pkill -f '[r]obust-prompt'" in remote


def test_slurm_launcher_runs_srun_with_distributed_on(tmp_path):
  env = _fake_bin(tmp_path, "srun")
  venv = tmp_path / "venv"
  (venv / "bin").mkdir(parents=True)
  (venv / "bin" / "activate").write_text("")
  env["VENV"] = str(venv)
  proc = _run(["bash", str(SCRIPTS / "slurm_gpu.sbatch"), "train", "--gin.x=1"], env)
  assert proc.returncode == 0, proc.stderr
  assert _calls(tmp_path) == [
    ["srun", "--kill-on-bad-exit=1", "robust-prompt", "train", "--gin.x=1", "--distributed=on"]
  ]


# -- experiment scripts ----------------------------------------------------------------------------


def _dry_run(script: pathlib.Path, **env_extra: str) -> subprocess.CompletedProcess:
  env = {**os.environ, "LAUNCHER": "local", "DRY_RUN": "1", **env_extra}
  return _run([str(script)], env)


@pytest.mark.parametrize("script", EXPERIMENTS, ids=lambda p: p.name)
def test_experiment_command_lines_parse(script):
  proc = _dry_run(script, TRAIN_INSTRUCTIONS="tasks/instructions/mmlu_train.jsonl")
  assert proc.returncode == 0, proc.stderr
  argv = shlex.split(proc.stdout)
  assert argv[0] == "robust-prompt"
  rest, bindings = gin_utils.split_gin_bindings(argv[1:])
  command = rest[0]
  assert command == ("train" if script.name.startswith("train_") else "eval")
  args = main.build_parser(command).parse_args(rest)  # every flag exists for the command
  assert bindings, "an experiment spells out its gin bindings"
  for gin_file in args.gin_file:
    assert (gin_utils.GIN_CONFIGS_DIR / gin_file).is_file(), f"{script.name}: no {gin_file}"
  assert any(f.startswith("models/") for f in args.gin_file)
  paths = [getattr(args, "instructions", None), getattr(args, "heldout_instructions", None)]
  for path in filter(None, paths):
    for p in [path] if isinstance(path, str) else path:
      assert (REPO / p).exists(), f"{script.name}: {p} does not exist"


def test_train_experiments_need_a_training_pool():
  for script in EXPERIMENTS:
    if script.name.startswith("train_"):
      env = {k: v for k, v in os.environ.items() if k != "TRAIN_INSTRUCTIONS"}
      env.update(LAUNCHER="local", DRY_RUN="1")
      proc = _run([str(script)], env)
      assert proc.returncode != 0 and "set TRAIN_INSTRUCTIONS" in proc.stderr


def test_experiments_dispatch_to_the_chosen_launcher(tmp_path):
  script = SCRIPTS / "experiments" / "eval_flan_t5_xl_mmlu.sh"
  proc = _dry_run(script, LAUNCHER="slurm", NODES="4")
  assert proc.returncode == 0
  assert shlex.split(proc.stdout)[:3] == ["sbatch", "--nodes=4", "--job-name=eval_flan_t5_xl_mmlu"]
  proc = _dry_run(script, LAUNCHER="tpu")
  assert shlex.split(proc.stdout)[0].endswith("tpu_scripts/launch.sh")
  assert _dry_run(script, LAUNCHER="k8s").returncode == 2


# -- local multi-process launcher ----------------------------------------------------------------

_FAKE_PROGRAM = """\
#!{python}
# Stands in for robust-prompt: joins jax.distributed with the flags the launcher adds and sums one
# value per device across processes.
import argparse, sys
p = argparse.ArgumentParser()
p.add_argument("command")
p.add_argument("--coordinator_address")
p.add_argument("--num_processes", type=int)
p.add_argument("--process_id", type=int)
p.add_argument("--fail", action="store_true")
a = p.parse_args()
if a.fail and a.process_id == 1:
  sys.exit(3)
import jax
jax.distributed.initialize(a.coordinator_address, a.num_processes, a.process_id,
                           initialization_timeout=60)
import jax.numpy as jnp
from jax.experimental import multihost_utils
import os
total = multihost_utils.process_allgather(jnp.float32(jax.local_device_count())).sum()
# One write(2) for the whole line: gloo's threads print to the same log file piece by piece, and a
# line written in several pieces (print() under PYTHONUNBUFFERED) can be cut by theirs.
line = (f"{{a.command}} process {{jax.process_index()}}/{{jax.process_count()}}: "
        f"{{jax.device_count()}} devices, sum {{float(total)}}\\n")
os.write(1, line.encode())
jax.distributed.shutdown()
"""


def _fake_program(tmp_path: pathlib.Path) -> pathlib.Path:
  path = tmp_path / "fake-robust-prompt"
  path.write_text(_FAKE_PROGRAM.format(python=sys.executable))
  path.chmod(0o755)
  return path


def test_local_multiprocess_launcher(tmp_path):
  env = dict(os.environ, ROBUST_PROMPT=str(_fake_program(tmp_path)), LOG_DIR=str(tmp_path / "l"))
  env.update(DEVICES_PER_PROCESS="2", TIMEOUT="120")
  proc = _run([str(SCRIPTS / "local_multiprocess.sh"), "2", "eval"], env)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  logs = [(tmp_path / "l" / f"process_{i}.log").read_text() for i in range(2)]
  assert "eval process 0/2: 4 devices, sum 4.0" in logs[0]
  assert "eval process 1/2: 4 devices, sum 4.0" in logs[1]


def test_local_multiprocess_launcher_stops_everything_when_one_fails(tmp_path):
  env = dict(os.environ, ROBUST_PROMPT=str(_fake_program(tmp_path)), LOG_DIR=str(tmp_path / "l"))
  env.update(DEVICES_PER_PROCESS="1", TIMEOUT="120")
  proc = _run([str(SCRIPTS / "local_multiprocess.sh"), "2", "eval", "--fail"], env)
  assert proc.returncode == 1
  assert "process 1 failed" in proc.stderr
