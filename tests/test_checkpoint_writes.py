"""Checkpoints that cannot be written (a full disk, a read-only or vanished directory) stop
the run in one line; the finished ones before stay restorable, and nothing half-written is
ever restored.

The disk is a small tmpfs this test mounts where the machine allows it (root in a
container with CAP_SYS_ADMIN); elsewhere the same failures are raised at the orbax
boundary (CheckpointManager.save) instead.
"""
import errno
import os
import shutil
import subprocess

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from train import checkpoint, workdir_lock

CONFIG = ml_collections.ConfigDict({"seed": 0})


def _state(step: int) -> dict:
  return {"w": jnp.sqrt(jnp.arange(20_000.0)) * step}  # 80 KB a checkpoint


def _data():
  return iter(grain.MapDataset.range(100).to_iter_dataset())


@pytest.fixture
def disk(tmp_path, monkeypatch):
  """(a 1 MiB filesystem of its own or None, a function that makes writes to it fail with
  `errno`): the failure is real on a mounted tmpfs, injected where mounting is refused."""
  where = tmp_path / "fs"
  where.mkdir()
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)],
                           capture_output=True).returncode == 0

  def fail_with(code):
    if not mounted:
      def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))
      monkeypatch.setattr(checkpoint.ocp.CheckpointManager, "save", refuse)
    elif code == errno.ENOSPC:
      free = os.statvfs(where).f_bavail * os.statvfs(where).f_frsize
      with open(where / "filler", "wb") as f:  # leaves less than a checkpoint's room
        f.write(b"\0" * (free - 40_000))
    else:
      subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)

  def repair():
    monkeypatch.undo()
    if mounted:
      subprocess.run(["mount", "-o", "remount,rw", str(where)], check=True)
      if (where / "filler").exists():
        os.remove(where / "filler")

  yield where, fail_with, repair
  if mounted:
    subprocess.run(["umount", "-l", str(where)], check=True)


def _restored_step(workdir) -> tuple[int, dict]:
  loader = checkpoint.Checkpointer(workdir, every=1, keep=1)
  abstract = jax.eval_shape(lambda: _state(1))
  shardings = jax.tree.map(lambda x: x.sharding, _state(1))
  try:
    return loader.restore_latest_readable(abstract, shardings, _data())
  finally:
    loader.close()


@pytest.mark.parametrize("code, cause", [(errno.ENOSPC, "No space left on device"),
                                         (errno.EROFS, "Read-only file system")])
def test_a_failed_write_stops_in_one_line_and_the_checkpoint_before_restores(disk, code, cause):
  where, fail_with, repair = disk
  workdir = str(where / "run")
  saver = checkpoint.Checkpointer(workdir, every=1, keep=1)  # keep 1: step 1 is the only copy
  assert saver.save(1, _state(1), _data(), CONFIG)
  saver.manager.wait_until_finished()
  fail_with(code)
  with pytest.raises(checkpoint.CheckpointWriteError) as raised:
    saver.save(2, _state(2), _data(), CONFIG)
    saver.close()  # a write that failed in the background surfaces here
  message = str(raised.value)
  assert "\n" not in message and cause in message
  assert message.startswith(f"could not write the checkpoint of step 2 in {workdir}/checkpoints")
  assert "the checkpoint of step 1 is intact" in message
  repair()
  step, state = _restored_step(workdir)
  assert step == 1  # the half-written step 2 is never picked
  np.testing.assert_array_equal(state["w"], _state(1)["w"])
  again = checkpoint.Checkpointer(workdir, every=1, keep=1)  # the rerun saves step 2 over it
  assert again.save(2, _state(2), _data(), CONFIG)
  again.close()
  assert _restored_step(workdir)[0] == 2


def test_a_removed_checkpoint_directory_stops_the_next_save(tmp_path):
  workdir = str(tmp_path / "run")
  saver = checkpoint.Checkpointer(workdir, every=1, keep=2)
  saver.save(1, _state(1), _data(), CONFIG)
  saver.manager.wait_until_finished()
  shutil.rmtree(checkpoint.directory(workdir))
  with pytest.raises(checkpoint.CheckpointWriteError,
                     match="No such file or directory.*no earlier checkpoint was finished"):
    saver.save(2, _state(2), _data(), CONFIG)


def test_a_removed_workdir_stops_the_next_save_of_the_run_that_held_it(tmp_path):
  workdir = str(tmp_path / "run")
  with workdir_lock.WorkdirLock(workdir) as lock:
    saver = checkpoint.Checkpointer(workdir, every=1, keep=2, lock=lock)
    saver.save(1, _state(1), _data(), CONFIG)
    saver.manager.wait_until_finished()
    shutil.rmtree(workdir)
    os.makedirs(workdir)  # recreated by someone else: not this run's workdir any more
    with pytest.raises(workdir_lock.WorkdirLost, match=f"workdir {workdir} was removed"):
      saver.save(2, _state(2), _data(), CONFIG)
