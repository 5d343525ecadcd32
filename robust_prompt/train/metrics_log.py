"""Training metrics: TensorBoard event files and a JSONL file, written by process 0 only.

TensorBoard events are written with `tensorboard`'s own event writer (no TensorFlow import);
`metrics.jsonl` holds one JSON object per logged step (`{"step": s, "loss": ..., ...}`), which
is easy to plot or diff.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping

import jax

METRICS_FILE = "metrics.jsonl"
TB_SUBDIR = "tensorboard"


class MetricsWriter:
  """Writes scalar metrics under `model_dir` (on process 0; a no-op elsewhere).

  Args:
    model_dir: the run's directory (`metrics.jsonl` and `tensorboard/train/` go there).
    append: keep earlier lines (a resumed run continues the same file).
  """

  def __init__(self, model_dir: str, append: bool = True):
    self.enabled = jax.process_index() == 0
    self._jsonl = None
    self._events = None
    if not self.enabled:
      return
    os.makedirs(model_dir, exist_ok=True)
    self._jsonl = open(os.path.join(model_dir, METRICS_FILE), "a" if append else "w")
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    self._events = EventFileWriter(os.path.join(model_dir, TB_SUBDIR, "train"))

  def write(self, step: int, metrics: Mapping[str, float]) -> None:
    """Logs scalars for `step` (non-finite values are written as null in the JSONL)."""
    if not self.enabled:
      return
    from tensorboard.compat.proto import event_pb2, summary_pb2

    values = {k: float(v) for k, v in sorted(metrics.items())}
    record = {"step": int(step), **{k: v if math.isfinite(v) else None for k, v in values.items()}}
    self._jsonl.write(json.dumps(record) + "\n")
    self._jsonl.flush()
    summary = summary_pb2.Summary(
      value=[summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in values.items()]
    )
    self._events.add_event(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

  def flush(self) -> None:
    if self._events is not None:
      self._events.flush()

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
      self._jsonl = None
    if self._events is not None:
      self._events.close()
      self._events = None


def read_metrics(model_dir: str) -> list[dict]:
  """Reads `metrics.jsonl` back (for tests and reports)."""
  with open(os.path.join(model_dir, METRICS_FILE)) as f:
    return [json.loads(line) for line in f if line.strip()]
