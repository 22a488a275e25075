"""One run writes a workdir: a second `train.main` stops at once naming the holder, the
hosts of one multi-host run share it, and the lock of a killed run is taken over."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tools import fuzz_config
from tests.conftest import tiny_config
from train import trainer, workdir_lock
from train.workdir_lock import WorkdirInUse, WorkdirLock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _holder(workdir, index=0) -> dict:
  with open(workdir_lock.lock_path(workdir, index)) as f:
    return json.load(f)


# A process that holds a workdir's lock until it is killed.
_HOLD = """
import sys, time
from train.workdir_lock import WorkdirLock
WorkdirLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_a_second_train_main_stops_at_once_naming_the_holder(tmp_path):
  """Two real processes: a holder, and train.main's entry point run in this one."""
  workdir = str(tmp_path / "run")
  holder = subprocess.Popen([sys.executable, "-c", _HOLD, workdir], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    code, message = fuzz_config.run_main(["--config=configs/gpt_tiny.py", f"--workdir={workdir}"])
  finally:
    holder.kill()
    holder.wait()
  assert code == 1 and "\n" not in message
  assert message.startswith(f"error: workdir {workdir} is in use by another run (host "
                            f"{socket.gethostname()}, pid {holder.pid}, started ")
  assert sorted(os.listdir(workdir)) == ["locks"]  # it wrote nothing: no config, no data


def test_the_lock_of_a_sigkilled_run_is_taken_over(tmp_path):
  workdir = str(tmp_path / "run")
  holder = subprocess.Popen([sys.executable, "-c", _HOLD, workdir], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(WorkdirInUse, match=f"pid {holder.pid}, started "):
      WorkdirLock(workdir).acquire()
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  assert _holder(workdir)["pid"] == holder.pid  # its record outlives it
  with WorkdirLock(workdir):
    assert _holder(workdir)["pid"] == os.getpid()
  assert os.path.getsize(workdir_lock.lock_path(workdir, 0)) == 0  # released: no holder


def test_hosts_of_one_run_share_the_workdir_but_not_a_process_id(tmp_path):
  workdir = str(tmp_path / "run")
  with WorkdirLock(workdir, 0), WorkdirLock(workdir, 1):
    with pytest.raises(WorkdirInUse, match="in use by another run"):
      WorkdirLock(workdir, 1).acquire()


def test_a_lock_on_another_host_is_refused_while_it_beats_and_taken_over_after(tmp_path):
  """Where the filesystem does not carry flock between hosts, the heartbeat decides."""
  workdir = str(tmp_path / "run")
  path = workdir_lock.lock_path(workdir, 0)
  os.makedirs(os.path.dirname(path))
  with open(path, "w") as f:
    json.dump({"host": "other-host", "pid": 123, "started": time.time() - 5}, f)
  with pytest.raises(WorkdirInUse, match=r"on another host \(host other-host, pid 123, .*alive"):
    WorkdirLock(workdir).acquire()
  silent = time.time() - workdir_lock.STALE_SECONDS - 1
  os.utime(path, (silent, silent))
  with WorkdirLock(workdir):
    assert _holder(workdir)["host"] == socket.gethostname()


def test_an_unwritable_workdir_fails_in_one_line(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("")  # a file where the workdir's directory would go: no root bypass
  with pytest.raises(ValueError, match=f"workdir {blocker}/run is not writable"):
    WorkdirLock(str(blocker / "run")).acquire()


def test_a_url_workdir_stops_before_anything_is_written(text_dir, data_dir, tmp_path,
                                                        monkeypatch):
  monkeypatch.chdir(tmp_path)  # os.makedirs("gs://b/run") would make ./gs:/b/run here
  with pytest.raises(ValueError, match=r"--workdir=gs://bucket/run: a URL cannot be a workdir "
                                       r"yet .*an NFS mount"):
    trainer.train(tiny_config(text_dir, data_dir), "gs://bucket/run")
  assert os.listdir(tmp_path) == []
