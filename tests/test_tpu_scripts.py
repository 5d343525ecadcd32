"""tpu_scripts/: syntax (bash -n), shellcheck, and what the scripts actually run.

`gcloud`, `srun` and `sbatch` are replaced by fakes on PATH that record their arguments, so the
tests check the real command lines (quoting of gin bindings included) without a cloud or cluster.
The experiment scripts are run with LAUNCHER=local DRY_RUN=1 and their command lines are parsed by
the real `robust-prompt` argument parser. Each experiment's settings live in one gin file under
gin_configs/experiments/, which must exist and parse with the CLI's configurables; the CE-only
baseline's config must differ from the alignment run's in the `losses.*` bindings only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shlex
import shutil
import stat
import subprocess
import sys
import textwrap

import gin
import pytest
from helpers import gin_bindings, parse_gin_or_skip

from robust_prompt.cli import eval as eval_cli
from robust_prompt.cli import gin_utils, main
from robust_prompt.cli import train as train_cli
from robust_prompt.data import bigbench
from robust_prompt.instructions.io import instructions_for_task, load_instructions

REPO = pathlib.Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "tpu_scripts"
ALL_SCRIPTS = sorted([*SCRIPTS.rglob("*.sh"), *SCRIPTS.rglob("*.sbatch")])
# *common.sh files are sourced by the scripts, not run.
EXPERIMENTS = sorted(
  p for p in (SCRIPTS / "experiments").glob("*.sh") if not p.name.endswith("common.sh")
)


def test_there_are_scripts():
  names = {p.name for p in ALL_SCRIPTS}
  assert {"setup_pod.sh", "launch.sh", "run_sync.sh", "logs.sh", "cleanup.sh"} <= names
  assert "slurm_gpu.sbatch" in names
  assert len(EXPERIMENTS) >= 5
  study = {p.name for p in EXPERIMENTS if p.name.startswith("sun2024_")}
  assert study == {"sun2024_flan_t5_xl.sh", "sun2024_t0pp.sh", "sun2024_alpaca_7b.sh"}


@pytest.mark.parametrize("script", ALL_SCRIPTS, ids=lambda p: str(p.relative_to(SCRIPTS)))
def test_bash_syntax_and_executable(script):
  subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
  if not script.name.endswith("common.sh"):
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


def test_run_sync_runs_one_quoted_command_and_waits(tmp_path):
  env = _fake_bin(tmp_path, "gcloud")
  env.update(TPU_NAME="pod", ZONE="z")
  args = ["report", "--title", "a b", "--output_dir", "runs/x/report"]
  proc = _run([str(SCRIPTS / "run_sync.sh"), "0", *args], env)
  assert proc.returncode == 0, proc.stderr
  (call,) = _calls(tmp_path)
  assert "--worker=0" in call
  remote = _remote_command(call)
  subprocess.run(["bash", "-n", "-c", remote], check=True, timeout=30)
  # In the foreground (no nohup, no &): gcloud returns the command's own exit status.
  assert "nohup" not in remote and not remote.rstrip().endswith("&")
  assert shlex.split(remote.splitlines()[-1]) == ["robust-prompt", *args]
  proc = _run([str(SCRIPTS / "run_sync.sh"), "all", "instructions", "build"], env)
  assert proc.returncode == 0 and "--worker=all" in _calls(tmp_path)[-1]


@pytest.mark.parametrize("args", [["0", "eval"], ["0", "train"], ["w1", "report"], ["0"]])
def test_run_sync_refuses_accelerator_jobs_and_bad_workers(tmp_path, args):
  env = _fake_bin(tmp_path, "gcloud")
  env.update(TPU_NAME="pod", ZONE="z")
  assert _run([str(SCRIPTS / "run_sync.sh"), *args], env).returncode == 2
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

EXPERIMENTS_DIR = SCRIPTS / "experiments"
GIN_DIR = gin_utils.GIN_CONFIGS_DIR
STUDY = {  # script -> (`instructions build --family`, its gin file)
  "sun2024_flan_t5_xl.sh": ("flan_t5", "experiments/sun2024_flan_t5_xl.gin"),
  "sun2024_t0pp.sh": ("t0", "experiments/sun2024_t0pp.gin"),
  "sun2024_alpaca_7b.sh": ("alpaca", "experiments/sun2024_alpaca_7b.gin"),
}
BENCHMARKS = ("mmlu", "bigbench_lite")
# The study's BIG-bench Lite selection (jiudingsun01/InstructionEval, configs/BBH/*): every
# multiple-choice BBL task, logical_deduction on its five_objects subtask only and strange_stories
# on its boolean subtask only.
STUDY_BBL_TASKS = [
  "bigbench:bbq_lite_json",
  "bigbench:code_line_description",
  "bigbench:conceptual_combinations",
  "bigbench:hindu_knowledge",
  "bigbench:known_unknowns",
  "bigbench:language_identification",
  "bigbench:logic_grid_puzzle",
  "bigbench:logical_deduction:five_objects",
  "bigbench:novel_concepts",
  "bigbench:play_dialog_same_or_different",
  "bigbench:strange_stories:boolean",
  "bigbench:strategyqa",
  "bigbench:vitaminc_fact_verification",
  "bigbench:winowhy",
]
DRY_ENV = {"TRAIN_INSTRUCTIONS": "observed/flan_t5_mmlu.jsonl"}
# The accelerator runs: each script once, each study script once per benchmark.
RUNS = [
  (script, ("eval", benchmark) if script.name in STUDY else ())
  for script in EXPERIMENTS
  for benchmark in (BENCHMARKS if script.name in STUDY else (None,))
]
# Flags of settings a script must leave to its gin file (each None when not given).
SETTING_FLAGS = {
  "eval": ("dtype", "mesh", "batch_size", "max_input_length", "max_target_length", "score_mode",
           "max_decode_length", "max_examples"),
  "train": ("dtype", "mesh", "batch_size", "max_input_length", "max_target_length", "num_steps",
            "seed", "max_examples"),
}  # fmt: skip


def _dry_run(script: pathlib.Path, *args: str, **env_extra: str) -> subprocess.CompletedProcess:
  env = {**os.environ, "LAUNCHER": "local", "DRY_RUN": "1", **env_extra}
  return _run([str(script), *args], env)


def _dry_argv(script: pathlib.Path, *args: str, **env_extra: str) -> list[str]:
  """The robust-prompt arguments (after the program name) that the script would run."""
  proc = _dry_run(script, *args, **{**DRY_ENV, **env_extra})
  assert proc.returncode == 0, proc.stderr
  argv = shlex.split(proc.stdout)
  assert argv[0] == "robust-prompt", argv
  return argv[1:]


def _parse(argv: list[str]):
  rest, bindings = gin_utils.split_gin_bindings(argv)
  return main.build_parser(rest[0]).parse_args(rest), bindings  # every flag exists for the command


def _includes(gin_file: str) -> list[str]:
  """The files a gin file includes, in order (top level only)."""
  lines = (GIN_DIR / gin_file).read_text().splitlines()
  return [ln.split(None, 1)[1].strip().strip("'\"") for ln in lines if ln.startswith("include ")]


def _missing_includes(gin_file: str) -> list[str]:
  missing = []
  for included in _includes(gin_file):
    if (GIN_DIR / included).is_file():
      missing += _missing_includes(included)
    else:
      missing.append(included)
  return missing


def _parse_gin_file(gin_file: str) -> None:
  missing = _missing_includes(gin_file)
  assert not missing, f"{gin_file} includes files that do not exist: {missing}"
  parse_gin_or_skip(gin_file)


def _run_id(run) -> str:
  script, args = run
  return " ".join([script.name, *args])


@pytest.mark.parametrize("run", RUNS, ids=_run_id)
def test_experiment_command_lines_are_thin_calls_of_one_gin_file(run):
  script, args = run
  parsed, bindings = _parse(_dry_argv(script, *args))
  assert parsed.command == ("train" if script.name.startswith("train_") else "eval")
  # Everything but paths, the model id and the task selection lives in the gin file.
  assert not bindings, f"{script.name}: settings belong in its gin file, not in {bindings}"
  for flag in SETTING_FLAGS[parsed.command]:
    assert getattr(parsed, flag) is None, f"{script.name}: --{flag} belongs in its gin file"
  assert len(parsed.gin_file) == 1 and parsed.gin_file[0].startswith("experiments/"), (
    parsed.gin_file
  )
  assert (GIN_DIR / parsed.gin_file[0]).is_file(), f"{script.name}: no {parsed.gin_file[0]}"
  paths = [getattr(parsed, "instructions", None), getattr(parsed, "heldout_instructions", None)]
  for path in [p for ps in filter(None, paths) for p in ps]:
    # The observed sets are written by the study scripts' `observed` step (checked below).
    if not path.startswith("observed/"):
      assert (REPO / path).exists(), f"{script.name}: {path} does not exist"


@pytest.mark.parametrize("run", RUNS, ids=_run_id)
def test_experiment_gin_files_parse_and_match_the_command_line(run, cli_gin):
  script, args = run
  parsed, _ = _parse(_dry_argv(script, *args))
  _parse_gin_file(parsed.gin_file[0])
  model_config = gin_utils.query_macro(gin_utils.MODEL_CONFIG_MACRO)
  assert model_config is not None, f"{parsed.gin_file[0]} binds no MODEL_CONFIG"
  assert model_config.dtype == "bfloat16"
  mesh_model = gin_utils.query_macro("MESH_MODEL")
  assert isinstance(mesh_model, int) and mesh_model > 0
  assert model_config.num_heads % mesh_model == 0, "heads must split evenly over the model axis"
  hub_id = gin_utils.query_macro("HF_MODEL_ID")
  if hub_id and not parsed.model.startswith(("/", ".")):
    assert parsed.model == hub_id, f"{script.name}: --model {parsed.model} but the gin is {hub_id}"
  if parsed.command == "eval":
    eval_cli.configured_settings()()  # validated EvalSettings
  else:
    assert isinstance(gin.query_parameter("train.num_steps"), int)  # no --num_steps needed
    for name in ("losses", "optimizer", "prompt"):
      train_cli.configurables()[name]()


def test_ce_only_baseline_differs_from_the_alignment_run_only_in_the_loss(cli_gin):
  ce = _dry_argv(EXPERIMENTS_DIR / "train_ce_only_prompt_flan_t5_xxl.sh")
  aligned = _dry_argv(EXPERIMENTS_DIR / "train_alignment_prompt_flan_t5_xxl.sh")

  def without(argv, *flags):
    return [a for i, a in enumerate(argv) if a not in flags and argv[i - 1] not in flags]

  # The same command line but for the gin file and the output folder.
  assert without(ce, "--gin_file", "--model_dir") == without(aligned, "--gin_file", "--model_dir")
  ce_gin, aligned_gin = (_parse(argv)[0].gin_file[0] for argv in (ce, aligned))
  # Both files are the shared settings and then one loss file, nothing else.
  shared = "experiments/flan_t5_xxl_mmlu_train.gin"
  assert _includes(ce_gin) == [shared, "losses/ce_only.gin"]
  assert _includes(aligned_gin) == [shared, "losses/alignment.gin"]
  for gin_file in (ce_gin, aligned_gin):
    lines = [ln for ln in (GIN_DIR / gin_file).read_text().splitlines() if ln.strip()]
    assert all(ln.startswith(("#", "include ")) for ln in lines), gin_file
  # The parsed configs: only losses.* differ, and only in the alignment weights.
  configs, losses = [], []
  for gin_file in (ce_gin, aligned_gin):
    _parse_gin_file(gin_file)
    configs.append(gin_bindings())
    losses.append(train_cli.configurables()["losses"]())
  differing = {
    k for k in configs[0].keys() | configs[1].keys() if configs[0].get(k) != configs[1].get(k)
  }
  assert differing == {"losses.lambda_sim", "losses.lambda_kl"}
  assert (losses[0].lambda_sim, losses[0].lambda_kl) == (0.0, 0.0)
  assert losses[1].lambda_sim > 0 and losses[1].lambda_kl > 0
  assert (
    dataclasses.replace(losses[0], lambda_sim=losses[1].lambda_sim, lambda_kl=losses[1].lambda_kl)
    == losses[1]
  )
  # And the baseline trains the same model as the run it is the baseline of.
  assert configs[0]["HF_MODEL_ID"] == configs[1]["HF_MODEL_ID"] == "'google/flan-t5-xxl'"


@pytest.mark.parametrize("name", sorted(STUDY))
def test_study_steps_fit_together(name):
  script = EXPERIMENTS_DIR / name
  family, gin_file = STUDY[name]
  extra = {"OBSERVED_SOURCE": "/sources/alpaca_data.json"} if family == "alpaca" else {}
  assert "runs/sun2024.gin" in _includes(gin_file)
  shipped = load_instructions([REPO / "tasks" / "instructions" / "bigbench"])
  for benchmark in BENCHMARKS:
    build, _ = _parse(_dry_argv(script, "observed", benchmark, **extra))
    run, _ = _parse(_dry_argv(script, "eval", benchmark))
    report, _ = _parse(_dry_argv(script, "report", benchmark))
    assert (build.command, build.instructions_command) == ("instructions", "build")
    assert (build.family, build.benchmark) == (family, benchmark)
    assert build.source == extra.get("OBSERVED_SOURCE")  # flan_t5, t0: the pinned download
    # The evaluation reads the shipped unobserved set and the observed set the build wrote.
    unobserved = (
      "tasks/instructions/mmlu.jsonl" if benchmark == "mmlu" else "tasks/instructions/bigbench"
    )
    assert run.instructions == [unobserved, build.output]
    assert (run.benchmark, run.gin_file) == (benchmark, [gin_file])
    # The report summarises that evaluation's results, with the study's average over tasks.
    assert report.per_instruction == f"{run.output_dir}/per_instruction.csv"
    assert report.results == [f"{run.output_dir}/results.jsonl"]
    assert report.instructions == run.instructions
    assert pathlib.Path(report.output_dir).parent == pathlib.Path(run.output_dir)
    assert report.macro == ("weighted" if benchmark == "mmlu" else "unweighted")
    if benchmark == "mmlu":
      assert run.tasks is None  # all 57 subjects
      continue
    assert run.tasks == STUDY_BBL_TASKS
    for task in run.tasks:
      assert bigbench.parse_name(task)[0] in bigbench.LITE_TASKS, task
      assert instructions_for_task(shipped, task), f"no shipped unobserved instruction for {task}"


def _readme_study_commands() -> list[list[str]]:
  """The commands of README.md's "Reproduce the robustness study", $BBL_TASKS expanded."""
  text = (REPO / "README.md").read_text()
  section = text.split("### Reproduce the robustness study", 1)[1].split("\n### ", 1)[0]
  blocks = [b.split("\n", 1)[1] for b in section.split("```bash")[1:]]
  bodies = [b.split("```", 1)[0] for b in blocks]
  script = " ".join(block.replace("\\\n", " ") for block in bodies)
  words = shlex.split(script)
  assert words[0].startswith("BBL_TASKS="), "the first block defines BBL_TASKS"
  tasks = words[0].split("=", 1)[1].split()
  commands, current = [], None
  for word in words[1:]:
    if word == "robust-prompt":
      current = []
      commands.append(current)
    elif word == "$BBL_TASKS":
      current.extend(tasks)
    else:
      current.append(word)
  return commands


def test_readme_study_commands_are_the_scripts_commands():
  expected = []
  for name, (family, _) in STUDY.items():
    extra = {"OBSERVED_SOURCE": "alpaca_data.json"} if family == "alpaca" else {}
    for benchmark in BENCHMARKS:
      for step in ("observed", "eval", "report"):
        expected.append(_dry_argv(EXPERIMENTS_DIR / name, step, benchmark, **extra))
  readme = _readme_study_commands()
  assert sorted(readme) == sorted(expected)


def test_study_alpaca_asks_for_its_observed_source():
  # Alpaca's tuning data has no pinned download: the build needs the user's alpaca_data.json.
  env = {k: v for k, v in os.environ.items() if k != "OBSERVED_SOURCE"}
  env.update(LAUNCHER="local", DRY_RUN="1")
  proc = _run([str(EXPERIMENTS_DIR / "sun2024_alpaca_7b.sh"), "observed", "mmlu"], env)
  assert proc.returncode == 2 and "set OBSERVED_SOURCE" in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize("args", [(), ("eval",), ("score", "mmlu"), ("eval", "bigbench")])
def test_study_scripts_reject_unknown_steps_and_benchmarks(args):
  proc = _dry_run(EXPERIMENTS_DIR / "sun2024_t0pp.sh", *args)
  assert proc.returncode == 2 and proc.stdout == ""


def test_train_experiments_need_a_training_pool():
  for script in EXPERIMENTS:
    if script.name.startswith("train_"):
      env = {k: v for k, v in os.environ.items() if k != "TRAIN_INSTRUCTIONS"}
      env.update(LAUNCHER="local", DRY_RUN="1")
      proc = _run([str(script)], env)
      assert proc.returncode != 0 and "set TRAIN_INSTRUCTIONS" in proc.stderr


def test_experiments_dispatch_to_the_chosen_launcher(tmp_path):
  script = EXPERIMENTS_DIR / "eval_flan_t5_xl_mmlu.sh"
  proc = _dry_run(script, LAUNCHER="slurm", NODES="4")
  assert proc.returncode == 0
  assert shlex.split(proc.stdout)[:3] == ["sbatch", "--nodes=4", "--job-name=eval_flan_t5_xl_mmlu"]
  proc = _dry_run(script, LAUNCHER="tpu")
  assert shlex.split(proc.stdout)[0].endswith("tpu_scripts/launch.sh")
  assert _dry_run(script, LAUNCHER="k8s").returncode == 2
  # Short CPU steps wait for their end: on worker 0 (process 0's results) or on every worker.
  study = EXPERIMENTS_DIR / "sun2024_flan_t5_xl.sh"
  report = shlex.split(_dry_run(study, "report", "mmlu", LAUNCHER="tpu").stdout)
  assert report[0].endswith("tpu_scripts/run_sync.sh") and report[1:3] == ["0", "report"]
  build = shlex.split(_dry_run(study, "observed", "mmlu", LAUNCHER="tpu").stdout)
  assert build[0].endswith("tpu_scripts/run_sync.sh") and build[1:4] == [
    "all",
    "instructions",
    "build",
  ]
  assert _dry_run(study, "report", "mmlu", LAUNCHER="k8s").returncode == 2


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
