"""Multi-host: jax.distributed start-up, host-local batches, and 2 processes x 4 devices == 1 x 8.

The equivalence test starts real processes (`tests/multihost_worker.py`): two that join through a
coordinator on 127.0.0.1 and talk over gloo (CPU collectives), each with 4 fake CPU devices, and one
with 8 devices alone. Both build a (data=4, model=2) mesh and must agree on scores, losses, the
trained prompt, an orbax round trip and eval predictions.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from robust_prompt import distributed, multihost, partitioning

REPO = pathlib.Path(__file__).resolve().parent.parent
WORKER = pathlib.Path(__file__).with_name("multihost_worker.py")
# Generous: the shared 2-core test machine can be heavily loaded. Normal runs take 30-90 s.
WORKER_TIMEOUT_S = 240


# -- distributed.py ---------------------------------------------------------------------------------


def test_off_and_auto_without_cluster_do_not_start(monkeypatch):
  for name in ("TPU_WORKER_HOSTNAMES", "SLURM_JOB_ID", "SLURM_NTASKS", "ROBUST_PROMPT_COORDINATOR"):
    monkeypatch.delenv(name, raising=False)
  assert not distributed.maybe_initialize(distributed.DistributedSpec(mode="off"))
  assert not distributed.maybe_initialize(distributed.DistributedSpec(mode="auto"))


def test_cluster_detection(monkeypatch):
  for name in ("TPU_WORKER_HOSTNAMES", "SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_NPROCS"):
    monkeypatch.delenv(name, raising=False)
  assert not distributed.cluster_detected()
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "t1k-w-0")  # a single-host TPU VM
  assert not distributed.cluster_detected()
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "t1k-w-0,t1k-w-1")
  assert distributed.cluster_detected()
  monkeypatch.delenv("TPU_WORKER_HOSTNAMES")
  monkeypatch.setenv("SLURM_JOB_ID", "17")
  monkeypatch.setenv("SLURM_NTASKS", "1")
  assert not distributed.cluster_detected()
  monkeypatch.setenv("SLURM_NTASKS", "4")
  assert distributed.cluster_detected()


def test_explicit_coordinator_needs_count_and_id(monkeypatch):
  for name in ("ROBUST_PROMPT_NUM_PROCESSES", "ROBUST_PROMPT_PROCESS_ID"):
    monkeypatch.delenv(name, raising=False)
  with pytest.raises(ValueError, match="--num_processes and --process_id"):
    distributed.maybe_initialize(distributed.DistributedSpec(coordinator_address="127.0.0.1:1"))
  with pytest.raises(ValueError, match=r"must lie in \[0, --num_processes=2\)"):
    distributed.maybe_initialize(
      distributed.DistributedSpec(coordinator_address="127.0.0.1:1", num_processes=2, process_id=2)
    )


def test_spec_from_env_fills_only_unset_fields(monkeypatch):
  monkeypatch.setenv("ROBUST_PROMPT_COORDINATOR", "10.0.0.1:1234")
  monkeypatch.setenv("ROBUST_PROMPT_NUM_PROCESSES", "4")
  monkeypatch.setenv("ROBUST_PROMPT_PROCESS_ID", "3")
  spec = distributed.spec_from_env(distributed.DistributedSpec(process_id=0))
  assert (spec.coordinator_address, spec.num_processes, spec.process_id) == ("10.0.0.1:1234", 4, 0)


# -- multihost.py with one process -------------------------------------------------------------------


def test_single_process_rows_and_global_arrays():
  mesh = partitioning.make_mesh(data=4, model=2)
  assert multihost.process_rows(mesh, 8) == slice(0, 8)
  x = np.arange(24, dtype=np.float32).reshape(8, 3)
  glob = multihost.host_local_to_global({"x": x}, mesh, 8)["x"]
  assert glob.shape == (8, 3)
  assert glob.sharding.spec == jax.sharding.PartitionSpec("data", None)
  np.testing.assert_array_equal(multihost.to_host(glob), x)
  np.testing.assert_array_equal(multihost.to_host(multihost.place_batch({"x": x}, mesh)["x"]), x)
  with pytest.raises(ValueError, match="must supply rows 0:8"):
    multihost.host_local_to_global({"x": x[:4]}, mesh, 8)


class _PartialSharding:
  """Stands in for the sharding seen by one process of several: only some rows are addressable."""

  def __init__(self, blocks):
    self.blocks = blocks

  def addressable_devices_indices_map(self, shape):
    return {f"dev{i}": (slice(a, b),) for i, (a, b) in enumerate(self.blocks)}


def test_local_rows_of_one_process_among_several():
  # Process 1 of 2 on a (data=4, model=2) mesh: two devices per data row, rows 4:8 of 8.
  assert multihost.local_rows(_PartialSharding([(4, 6), (4, 6), (6, 8), (6, 8)]), 8) == slice(4, 8)
  with pytest.raises(ValueError, match="non-contiguous rows"):
    multihost.local_rows(_PartialSharding([(0, 2), (4, 6)]), 8)


def test_shard_for_process_covers_everything_once():
  items = list(range(11))
  shares = [multihost.shard_for_process(items, i, 3) for i in range(3)]
  assert shares == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
  assert multihost.shard_for_process(items) == items
  with pytest.raises(ValueError, match="outside"):
    multihost.shard_for_process(items, 3, 3)


def test_main_process_writing(tmp_path):
  assert multihost.is_main_process()
  multihost.write_text_main(tmp_path / "sub" / "a.txt", "hello")
  assert (tmp_path / "sub" / "a.txt").read_text() == "hello"
  assert multihost.broadcast_from_main(np.int32(5)) == 5
  multihost.sync("noop")  # one process: no barrier


def test_grouped_batches_can_be_built_one_process_share_at_a_time():
  import seqio

  from robust_prompt.data.example import Example
  from robust_prompt.instructions.schema import Instruction
  from robust_prompt.train import grouping

  examples = [
    Example(id=f"t:{i}", task="toy:gen", fields={"input": f"say {i}"}, targets=(f"{i}",))
    for i in range(5)
  ]
  instructions = [
    Instruction(f"i{j}", ("toy:*",), f"v{j} {{input}}", "none", "option_text", "unobserved", "h")
    for j in range(3)
  ]
  data = grouping.GroupedData(
    examples, instructions, seqio.ByteVocabulary(), groups_per_batch=3, members_per_group=4,
    max_input_length=16, max_target_length=4,
  )  # fmt: skip
  full = data.batch(7)
  for rows in (slice(0, 6), slice(6, 12), slice(3, 9), slice(11, 12)):
    part = data.batch(7, rows)
    assert set(part) == set(full)
    for name in full:
      np.testing.assert_array_equal(part[name], full[name][rows], err_msg=f"{rows} {name}")
  with pytest.raises(ValueError, match="select no row"):
    data.batch(7, slice(12, 12))


# -- 2 processes x 4 devices vs 1 process x 8 devices ----------------------------------------------


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start(out: pathlib.Path, log: pathlib.Path, *extra: str) -> subprocess.Popen:
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # the worker sets its own
  env["JAX_PLATFORMS"] = "cpu"
  return subprocess.Popen(
    [sys.executable, str(WORKER), "--out", str(out), *extra],
    stdout=log.open("w"),
    stderr=subprocess.STDOUT,
    env=env,
    start_new_session=True,  # its own process group, so a hang is killed with all its threads
  )


def _wait_all(procs: dict[str, tuple[subprocess.Popen, pathlib.Path]], timeout: float) -> None:
  deadline = time.monotonic() + timeout
  try:
    for name, (proc, log) in procs.items():
      try:
        rc = proc.wait(timeout=max(deadline - time.monotonic(), 1))
      except subprocess.TimeoutExpired:
        pytest.fail(f"{name} did not finish within {timeout} s; log:\n{log.read_text()[-3000:]}")
      assert rc == 0, f"{name} failed (exit {rc}); log:\n{log.read_text()[-3000:]}"
  finally:
    for proc, _ in procs.values():
      if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_two_processes_match_one_process(tmp_path):
  single, multi = tmp_path / "single", tmp_path / "multi"
  single.mkdir()
  multi.mkdir()
  coordinator = f"127.0.0.1:{_free_port()}"
  procs = {
    "1 process x 8 devices": (single, "--num_processes", "1", "--local_devices", "8"),
    **{
      f"process {i} of 2": (
        multi, "--num_processes", "2", "--process_id", str(i), "--coordinator", coordinator,
        "--local_devices", "4", "--timeout", "120",
      )
      for i in range(2)
    },
  }  # fmt: skip
  started = {}
  for name, (out, *extra) in procs.items():
    log = tmp_path / f"{name.replace(' ', '_')}.log"
    started[name] = (_start(out, log, *extra), log)
  _wait_all(started, WORKER_TIMEOUT_S)

  one, two = np.load(single / "result.npz"), np.load(multi / "result.npz")
  # Each process built only its own rows: process 0 holds the first half of the data axis.
  np.testing.assert_array_equal(two["rows_0"], [0, 4])
  np.testing.assert_array_equal(one["rows_0"], [0, 8])
  np.testing.assert_array_equal(two["row_ids"], np.arange(8))
  # Same numbers up to float32 reduction order (gloo all-reduces vs in-process ones).
  for key in ("scores", "losses", "prompt", "restored_prompt"):
    np.testing.assert_allclose(two[key], one[key], rtol=1e-5, atol=1e-5, err_msg=key)
  steps = one["losses"].shape[0]
  np.testing.assert_array_equal(two["logged_steps"], np.arange(1, steps + 1))
  assert np.isfinite(one["losses"]).all() and one["losses"][-1, 0] < one["losses"][0, 0]
  assert (one["losses"][:, 2:] > 0).all()  # the alignment and KL terms are active
  np.testing.assert_array_equal(two["restored_prompt"], two["prompt"])  # exact orbax round trip
  assert int(two["restored_step"]) == int(one["restored_step"]) == steps
  np.testing.assert_array_equal(np.load(multi / "train" / "prompt.npy"), two["prompt"])
  # Eval: the same results rows (scores to float tolerance, predictions exactly) and reports.
  rows_one, rows_two = (_read_jsonl(d / "eval" / "results.jsonl") for d in (single, multi))
  assert len(rows_two) == len(rows_one) == 6 + 5
  assert {isinstance(r["prediction"], str) for r in rows_one} == {True, False}  # both kinds
  for a, b in zip(rows_one, rows_two):
    np.testing.assert_allclose(b.pop("option_scores"), a.pop("option_scores"), rtol=1e-5)
    assert a == b
  assert (multi / "eval" / "summary.json").is_file()
  # Written by process 0 only.
  assert (multi / "main_only.txt").read_text() == "0"


def _read_jsonl(path: pathlib.Path) -> list[dict]:
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- the real command line, 2 processes via tpu_scripts/local_multiprocess.sh ----------------------


def _cli(tmp_path, name: str, argv: list[str], processes: int) -> subprocess.CompletedProcess:
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(JAX_PLATFORMS="cpu", TIMEOUT="400", LOG_DIR=str(tmp_path / f"{name}_logs"))
  env["ROBUST_PROMPT"] = str(pathlib.Path(sys.executable).with_name("robust-prompt"))
  if processes == 1:
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    cmd = [env["ROBUST_PROMPT"], *argv]
  else:
    env["DEVICES_PER_PROCESS"] = str(8 // processes)
    cmd = [str(REPO / "tpu_scripts" / "local_multiprocess.sh"), str(processes), *argv]
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=450, cwd=REPO)
  assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
  return proc


@pytest.mark.slow
def test_cli_eval_and_train_on_two_processes_match_one(tmp_path, spiece_path, mmlu_dir):
  """`robust-prompt eval` and `train` (tiny HF model, real MMLU rows) as 2 x 4 vs 1 x 8 devices."""
  from conftest import make_tiny_hf_t5

  model = make_tiny_hf_t5(tmp_path / "hf", "t5_1_1", spiece_path)
  common = ["--model", str(model), "--benchmark", "mmlu", "--data_dir", str(mmlu_dir)]
  common += ["--tasks", "mmlu:anatomy", "--mesh", "data=4,model=2", "--no_progress"]
  instructions = str(REPO / "tasks" / "instructions" / "mmlu.jsonl")
  for n in (1, 2):
    out = tmp_path / f"p{n}"
    _cli(tmp_path, f"eval{n}", ["eval", *common, "--instructions", instructions, "--max_examples",
         "3", "--gin_file", "test/eval_tiny.gin", "--output_dir", str(out / "eval")], n)  # fmt: skip
    _cli(tmp_path, f"train{n}", ["train", *common, "--train_instructions", instructions,
         "--max_examples", "4", "--num_steps", "3", "--gin_file", "test/train_tiny.gin",
         "--gin.data.groups_per_batch=3", "--model_dir", str(out / "train")], n)  # fmt: skip
  one, two = tmp_path / "p1", tmp_path / "p2"
  rows_one = _read_jsonl(one / "eval" / "results.jsonl")
  rows_two = _read_jsonl(two / "eval" / "results.jsonl")
  assert len(rows_one) == len(rows_two) == 16 * 3
  for a, b in zip(rows_one, rows_two):
    np.testing.assert_allclose(b.pop("option_scores"), a.pop("option_scores"), rtol=1e-5)
    assert a == b
  assert (two / "eval" / "summary.json").read_text() == (one / "eval" / "summary.json").read_text()
  np.testing.assert_allclose(
    np.load(two / "train" / "prompt.npy"), np.load(one / "train" / "prompt.npy"), atol=1e-5
  )
  logged = [_read_jsonl(d / "train" / "metrics.jsonl") for d in (one, two)]
  assert [m["step"] for m in logged[1]] == [1, 2, 3]  # one writer: no duplicated lines
  for a, b in zip(*logged):
    np.testing.assert_allclose(b["loss"], a["loss"], rtol=1e-5)
