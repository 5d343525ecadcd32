"""Checkpoints of the train state with orbax: every N steps, keep the last K, asynchronous.

A checkpoint holds the `TrainState` (prompt, optimizer state, step) and a small JSON record of
what makes the data order and the RNG (seed, G, K, ...). Because batches and per-step keys are
pure functions of `(seed, step)`, restoring the state is all an exact resume needs; the JSON
record lets a resume refuse a changed seed or batch layout instead of silently diverging.
Beside the checkpoints the loop exports `prompt.npy` (the latest prompt, for `eval --prompt`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import orbax.checkpoint as ocp

from robust_prompt.train.state import TrainState

CHECKPOINT_SUBDIR = "checkpoints"


class ResumeMismatchError(ValueError):
  """A checkpoint written with settings that change the data order or the batch layout."""


class Checkpointer:
  """Saves and restores `TrainState`s under `<model_dir>/checkpoints/<step>/`.

  Args:
    model_dir: the run's directory.
    save_every: save when `step % save_every == 0` (and always when `force=True`).
    keep: how many of the latest checkpoints to keep.
    asynchronous: write in a background thread (the step loop continues meanwhile).
  """

  def __init__(self, model_dir: str, save_every: int = 1000, keep: int = 3, asynchronous=True):
    if save_every < 1 or keep < 1:
      raise ValueError(f"need save_every >= 1 and keep >= 1; got {save_every}, {keep}")
    self.save_every = save_every
    self.directory = os.path.join(os.path.abspath(model_dir), CHECKPOINT_SUBDIR)
    options = ocp.CheckpointManagerOptions(
      save_interval_steps=save_every,
      max_to_keep=keep,
      enable_async_checkpointing=asynchronous,
      create=True,
    )
    self._manager = ocp.CheckpointManager(
      self.directory, options=options, item_names=("state", "meta")
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: TrainState, meta: Mapping, force: bool = False) -> bool:
    """Starts saving `state` at `step` when due (or `force`); returns whether it saves."""
    # Decide here rather than in orbax, which also saves the first step it sees.
    if not force and step % self.save_every:
      return False
    return self._manager.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(dict(meta))
      ),
      force=True,
    )

  def restore(self, step: int, target: TrainState, meta: Mapping | None = None) -> TrainState:
    """Restores the state at `step` into `target`'s structure, shapes and shardings.

    Args:
      step: which checkpoint.
      target: abstract state (`state.abstract_state`): `ShapeDtypeStruct`s with shardings.
      meta: the current run's settings; any key whose saved value differs raises.

    Raises:
      ResumeMismatchError: the checkpoint was written with other settings (see `meta`).
    """
    restored = self._manager.restore(
      step,
      args=ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()),
    )
    saved = restored["meta"] or {}
    if meta is not None:
      diffs = [
        f"{k}: checkpoint {saved[k]!r} != now {v!r}"
        for k, v in meta.items()
        if k in saved and saved[k] != v
      ]
      if diffs:
        raise ResumeMismatchError(
          f"{self.directory}/{step}: cannot resume exactly, the run's settings changed ("
          + "; ".join(diffs)
          + "). Restore the settings, or train into a new --model_dir."
        )
    return restored["state"]

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
