"""One writer per workdir and host index: a second run on the same workdir stops at once.

Each host of a run holds `workdir/locks/process_{i}.json` (i: its jax.process_index), so
the hosts of one multi-host run share the workdir while a double-started job, or a
second host given the same process id, is refused with the holder's host, pid and start
time. The file is held with flock: the kernel drops the lock when its holder dies, even
by SIGKILL, so a stale lock on this host is taken over at once, and two starters cannot
both win. Filesystems shared between hosts may not carry flock across them; there the
holder's heartbeat (the file's mtime, touched every HEARTBEAT_SECONDS) tells a live
holder on another host from a dead one (silent for STALE_SECONDS).
"""
import datetime
import fcntl
import json
import os
import socket
import threading
import time

from absl import logging

HEARTBEAT_SECONDS = 10
STALE_SECONDS = 60


class WorkdirInUse(ValueError):
  """Another live process holds this workdir's lock for this host index."""


class WorkdirLost(RuntimeError):
  """The workdir (or its lock file) vanished or was replaced while this run held it."""


def lock_path(workdir: str, process_index: int) -> str:
  return os.path.join(workdir, "locks", f"process_{process_index}.json")


def _describe(holder: dict) -> str:
  started = datetime.datetime.fromtimestamp(holder["started"]).isoformat(timespec="seconds")
  return f"host {holder['host']}, pid {holder['pid']}, started {started}"


class WorkdirLock:
  """The lock of `workdir` for host `process_index`, held from `acquire()` to `release()`
  (or for a `with` block)."""

  def __init__(self, workdir: str, process_index: int = 0):
    self.workdir, self.path = workdir, lock_path(workdir, process_index)
    self._fd = None
    self._stop = threading.Event()
    self._heartbeat = None

  def acquire(self) -> "WorkdirLock":
    self._made_workdir = not os.path.exists(self.workdir)
    try:
      os.makedirs(os.path.dirname(self.path), exist_ok=True)
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
      raise ValueError(f"workdir {self.workdir} is not writable ({e.strerror}: {e.filename}); "
                       "give a --workdir this process can write") from None
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = self._read(fd)
      os.close(fd)
      raise WorkdirInUse(f"workdir {self.workdir} is in use by another run ("
                         f"{_describe(holder) if holder else 'starting'}); wait for it to end, "
                         "or stop it, or use another --workdir") from None
    previous = self._read(fd)
    if previous:
      silent = time.time() - os.fstat(fd).st_mtime
      if previous["host"] != socket.gethostname() and silent < STALE_SECONDS:
        os.close(fd)
        raise WorkdirInUse(f"workdir {self.workdir} is in use by a run on another host "
                           f"({_describe(previous)}, alive {silent:.0f} s ago); if it is dead, "
                           f"rerun after {STALE_SECONDS} s of silence, or use another --workdir")
      logging.warning("Took over the lock of workdir %s from a run that is gone (%s).",
                      self.workdir, _describe(previous))
    me = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
    try:
      os.ftruncate(fd, 0)
      os.pwrite(fd, json.dumps(me).encode(), 0)
      os.fsync(fd)
    except OSError as e:  # a full disk
      os.close(fd)
      raise ValueError(f"workdir {self.workdir} cannot be written ({e.strerror}); free space "
                       "or give another --workdir") from None
    self._fd = fd
    self._stop.clear()
    self._heartbeat = threading.Thread(target=self._beat, daemon=True, name="workdir-lock")
    self._heartbeat.start()
    return self

  @staticmethod
  def _read(fd: int) -> dict | None:
    raw = os.pread(fd, 4096, 0)
    try:
      return json.loads(raw) if raw else None
    except ValueError:  # a holder killed while writing it: nothing to name
      return None

  def _beat(self):
    while not self._stop.wait(HEARTBEAT_SECONDS):
      try:
        os.utime(self._fd)
      except OSError:
        pass  # the workdir is gone: check_held says so in the run's own thread

  def check_held(self) -> None:
    """Raises WorkdirLost if the lock file this run holds is no longer at its path (the
    workdir was removed or replaced): whatever it wrote there is gone."""
    try:
      here = os.stat(self.path).st_ino
    except OSError:
      here = None
    if here != os.fstat(self._fd).st_ino:
      raise WorkdirLost(f"workdir {self.workdir} was removed or replaced while this run was "
                        "writing it; stopped without saving. Rerun to start again (or resume "
                        "from what is left there)")

  def release(self) -> None:
    """Empties the file (the next run sees no holder) and unlocks it. The file stays:
    unlinking it could let a waiting starter lock a file no one else can see."""
    if self._fd is None:
      return
    self._stop.set()
    self._heartbeat.join()
    try:
      os.ftruncate(self._fd, 0)
    except OSError:
      pass  # a vanished or read-only workdir: closing still unlocks
    os.close(self._fd)  # closing drops the flock
    self._fd = None
    if self._made_workdir:
      self._remove_if_unused()

  def _remove_if_unused(self) -> None:
    """Removes the workdir this lock made if the run wrote nothing else there (it stopped
    on bad input), so a failed start leaves no trace."""
    try:
      if os.listdir(self.workdir) == ["locks"] and os.listdir(os.path.dirname(self.path)) == [
          os.path.basename(self.path)]:
        os.remove(self.path)
        os.rmdir(os.path.dirname(self.path))
        os.rmdir(self.workdir)
    except OSError:
      pass  # another process wrote there meanwhile: it is theirs now

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()
