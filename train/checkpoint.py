"""Orbax checkpoints of the train state with the data iterator's position and the config.

A step is written to a temporary directory and renamed when complete, so a
crash mid-save leaves nothing that looks finished. A finished checkpoint that
later fails to restore (a truncated or deleted file) is moved aside into
`checkpoints_unreadable/`, never deleted, and the one before it is used.

Each host writes its own data position (grain's `process_{i}-of-{n}.json`). The
state restores onto any mesh and host count; the data position on another host
count only with `config.data.shard_by="rows"`, where every host's position is
the same (input_pipeline.py), so process 0's is used. Any other mismatch is a
HostCountError, and the checkpoint stays where it is.

A save that cannot be written (no space left, a read-only or vanished directory, now or
in the background write of the save before) raises CheckpointWriteError: the run stops,
the finished checkpoints before it stay, and the half-written one is never picked (orbax
lists only finished steps, and replaces the unfinished directory when the step is saved
again).
"""
import contextlib
import glob
import json
import os
import re
import shutil
import time

from absl import logging
import grain
import jax
from jax.experimental import multihost_utils
import ml_collections
import orbax.checkpoint as ocp

from train import workdir_lock


def directory(workdir: str) -> str:
  """Where a run's checkpoints live inside its workdir."""
  return os.path.join(workdir, "checkpoints")


class HostCountError(ValueError):
  """A whole checkpoint whose data position cannot continue on this many hosts."""


class CheckpointWriteError(RuntimeError):
  """A checkpoint could not be written; the finished ones before it are intact."""


class Checkpointer:
  """Async checkpoints {'state', 'data_iter', 'config'} per step: the last `keep`, plus every
  multiple of `keep_every` (if set) for good."""

  def __init__(self, workdir: str, every: int, keep: int, keep_every: int = 0,
               shard_by: str = "documents", lock=None):
    self.workdir = workdir
    self.shard_by = shard_by  # config.data.shard_by: "rows" resumes on any host count
    self.lock = lock  # the run's WorkdirLock (train/workdir_lock.py), checked before each save
    self._last_save = 0  # the step of the latest save started
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=every, max_to_keep=keep, keep_period=keep_every or None,
        enable_async_checkpointing=True, create=True)
    self.manager = ocp.CheckpointManager(
        directory(workdir), options=options, item_names=("state", "data_iter", "config"),
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "data_iter": grain.checkpoint.CheckpointHandler(),
                       "config": ocp.JsonCheckpointHandler()})

  @classmethod
  def for_run(cls, workdir: str, config: ml_collections.ConfigDict,
              lock=None) -> "Checkpointer":
    t = config.train
    return cls(workdir, t.checkpoint_every, t.keep_checkpoints, t.keep_checkpoints_every,
               config.data.shard_by, lock)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, data_iter, config: ml_collections.ConfigDict, *,
           force: bool = False) -> bool:
    """Saves if `step` is on the interval (or `force`); returns whether it saved.

    Raises CheckpointWriteError if this save, or the background write of the one
    before, fails."""
    if not (force or self.manager.should_save(step)):
      return False
    with self._stopping_on_write_errors(step):
      if self.lock is not None:
        self.lock.check_held()
      self._probe_writable()
      saved = self.manager.save(step, force=force, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          data_iter=grain.checkpoint.CheckpointSave(data_iter),
          config=ocp.args.JsonSave(json.loads(config.to_json()))))
    self._last_save = step if saved else self._last_save
    return saved

  def _probe_writable(self) -> None:
    """Writes and removes one byte where the step goes: a read-only directory fails here, in
    this thread (orbax 0.12 waits forever for a directory its background thread failed to
    make), and a full disk or a vanished directory before anything is half-written."""
    probe = os.path.join(directory(self.workdir), f".write_probe.{jax.process_index()}")
    with open(probe, "wb") as f:
      f.write(b"\0")
      f.flush()
      os.fsync(f.fileno())
    os.remove(probe)

  @contextlib.contextmanager
  def _stopping_on_write_errors(self, step: int):
    """Turns any failure to write (orbax and tensorstore raise many types) into one
    CheckpointWriteError naming the step, the cause and what is intact."""
    try:
      yield
    except workdir_lock.WorkdirLost:
      raise
    except Exception as e:  # pylint: disable=broad-except
      cause = " ".join(str(e).split())  # one line; tensorstore's end with the OS's reason
      cause = cause if len(cause) <= 300 else f"{cause[:100]} ... {cause[-200:]}"
      finished = self._finished_steps()
      intact = (f"the checkpoint of step {max(finished)} is intact and a rerun resumes from it"
                if finished else "no earlier checkpoint was finished")
      raise CheckpointWriteError(
          f"could not write the checkpoint of step {step} in {directory(self.workdir)} "
          f"({type(e).__name__}: {cause}); {intact}. Free space or make the directory "
          "writable, then rerun the same command") from None

  def _finished_steps(self) -> list[int]:
    """Steps whose checkpoint directory was finished (renamed from its temporary name)."""
    try:
      return [int(n) for n in os.listdir(directory(self.workdir)) if n.isdigit()]
    except OSError:
      return []

  def restore(self, step: int, abstract_state, shardings, data_iter=None):
    """The state at `step`, laid out by `shardings`; a given `data_iter` moves to where it was.

    Raises HostCountError, before reading anything, if `data_iter` cannot continue
    on this many hosts.
    """
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract_state, shardings)
    items = {"state": ocp.args.StandardRestore(target)}
    other_hosts = None
    if data_iter is not None:  # without one (inference), the data position is not read
      other_hosts = self._data_position_from_other_hosts(step)
      if other_hosts is None:
        items["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
    state = self.manager.restore(step, args=ocp.args.Composite(**items))["state"]
    if other_hosts is not None:
      with open(other_hosts, encoding="utf-8") as f:
        data_iter.set_state(json.load(f))
    return state

  def _data_position_from_other_hosts(self, step: int) -> str | None:
    """None if this host's own data position file is in checkpoint `step` (or none is, for
    the restore to fail on); else process 0's, if it is valid on this host count."""
    hosts = jax.process_count()
    where = os.path.join(directory(self.workdir), str(step), "data_iter")
    counts = {int(re.search(r"-of-(\d+)\.json$", p)[1])
              for p in glob.glob(os.path.join(where, "process_*-of-*.json"))}
    if hosts in counts or len(counts) != 1:
      return None
    written_by = counts.pop()
    if self.shard_by != "rows":
      raise HostCountError(
          f"checkpoint {os.path.dirname(where)} was written by {written_by} hosts with "
          f"config.data.shard_by={self.shard_by!r}, where each host reads its own share of the "
          f"documents, so its data position continues only on {written_by} hosts, not "
          f"{hosts}; resume it with --num_processes={written_by} (a run that must change its "
          "host count needs --config.data.shard_by=rows from its start, in a new --workdir)")
    logging.info("Checkpoint %d was written by %d hosts; with data.shard_by='rows' their data "
                 "positions are the same, and %d hosts continue from process 0's.", step,
                 written_by, hosts)
    return os.path.join(where, f"process_0-of-{written_by}.json")

  def restore_latest_readable(self, abstract_state, shardings, data_iter=None):
    """(step, state) of the newest checkpoint that restores, or (None, None) if none does.

    Unreadable ones are moved aside with a warning naming them, so the run
    continues from the one before and a later save of the same step cannot
    clash with the broken files.
    """
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        return step, self.restore(step, abstract_state, shardings, data_iter)
      except HostCountError:
        raise  # the checkpoint is whole: this run is set up differently
      except Exception as e:  # orbax/tensorstore raise many types for damaged files
        self._set_aside(step, e)
    return None, None

  def _set_aside(self, step: int, error: Exception) -> None:
    broken = os.path.join(directory(self.workdir), str(step))
    aside = os.path.join(self.workdir, "checkpoints_unreadable", f"{step}-{int(time.time())}")
    logging.warning("Checkpoint %s cannot be restored (%s: %s); moved to %s, using the one "
                    "before it.", broken, type(error).__name__, str(error)[:200], aside)
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(aside), exist_ok=True)
      shutil.move(broken, aside)
    multihost_utils.sync_global_devices(f"checkpoint {step} set aside")
    self.manager.reload()

  def reached_preemption(self, step: int) -> bool:
    """True at JAX's preemption sync point (multi-host TPU: all hosts agree on the step)."""
    return self.manager.reached_preemption(step)

  def close(self) -> None:
    """Waits for pending async saves, then releases the manager; raises
    CheckpointWriteError if the last save's background write failed."""
    with self._stopping_on_write_errors(self._last_save):
      self.manager.wait_until_finished()
      self.manager.close()
