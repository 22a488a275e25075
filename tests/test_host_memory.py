"""train/host_memory: memory freed on the C heap goes back to the OS; a training program
restarts once to get huge pages."""
import os
import subprocess
import sys

import pytest

from train import host_memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _resident_mib() -> float:
  with open("/proc/self/status") as status:
    line = next(line for line in status if line.startswith("VmRSS"))
  return int(line.split()[1]) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux") or
                    host_memory._glibc_malloc_trim() is None,  # pylint: disable=protected-access
                    reason="glibc's malloc_trim is Linux-only; elsewhere the call does nothing")
def test_freed_heap_pages_are_returned():
  # 100 MB in blocks above Python's small-object allocator, so they come from malloc, and one
  # block after them, so that the heap cannot shrink from its top when they are freed.
  blocks = [bytearray(2000) for _ in range(50_000)]
  pin = bytearray(2000)
  del blocks
  held = _resident_mib()
  assert host_memory.release_freed_memory()
  assert _resident_mib() < held - 50
  del pin


ENV = {"PATH": "/bin"}
GLIBC, MADVISE = (2, 36), "madvise"


def test_huge_pages_are_asked_for_only_where_glibc_and_the_kernel_give_them_on_request():
  added = host_memory.huge_page_environ(ENV, GLIBC, MADVISE)
  assert added == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1",
                   host_memory.USERS_TUNABLES: ""}
  # A user's own tunables are kept, and ours comes after them.
  users = {**ENV, "GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}
  assert host_memory.huge_page_environ(users, GLIBC, MADVISE)["GLIBC_TUNABLES"] == (
      "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1")
  unchanged = [
      (ENV, (2, 34), MADVISE),  # glibc before the tunable
      (ENV, None, MADVISE),  # not glibc
      (ENV, GLIBC, "always"),  # the kernel gives huge pages unasked
      (ENV, GLIBC, "never"),
      (ENV, GLIBC, None),  # not Linux
      ({**ENV, "GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, GLIBC, MADVISE),  # the user chose
      (added, GLIBC, MADVISE),  # restarted already: no second restart
  ]
  for environ, libc, mode in unchanged:
    assert host_memory.huge_page_environ(environ, libc, mode) is None, (environ, libc, mode)


def test_the_users_environment_is_recovered_after_the_restart():
  for environ in (ENV, {**ENV, "GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}):
    restarted = host_memory.huge_page_environ(environ, GLIBC, MADVISE)
    assert host_memory.users_environ(restarted) == environ
    assert host_memory.users_environ(environ) == environ


def test_only_the_program_the_interpreter_was_started_for_restarts():
  main = os.path.join(ROOT, "train", "main.py")
  python = sys.executable
  assert host_memory.started_this_program([python, "train/x.py", "--a"], ["train/x.py", "--a"])
  assert host_memory.started_this_program([python, "-X", "dev", "-m", "train.main", "--a=1"],
                                          [main, "--a=1"])
  assert host_memory.started_this_program([python, "-m", "train.main"], [main])
  # A notebook kernel running train.main inside itself (`%run -m train.main ...`).
  kernel = [python, "-m", "ipykernel_launcher", "-f", "kernel.json"]
  assert not host_memory.started_this_program(kernel, [main, "--a=1"])
  assert not host_memory.started_this_program(kernel, [main])
  assert not host_memory.started_this_program([python, "-c", "print(1)"], ["-c"])


def test_a_program_restarts_once_under_the_huge_page_environment(tmp_path):
  # The child prints its tunables after the call; it must come back once, not loop.
  program = tmp_path / "program.py"
  program.write_text("from train import host_memory\nhost_memory.restart_with_huge_pages()\n"
                     "import os\nprint(os.environ.get('GLIBC_TUNABLES'))\n")
  environ = {k: v for k, v in os.environ.items()
             if k not in ("GLIBC_TUNABLES", host_memory.USERS_TUNABLES)}
  environ["PYTHONPATH"] = ROOT
  out = subprocess.run([sys.executable, str(program)], env=environ, check=True,
                       capture_output=True, text=True, timeout=120).stdout
  expected = host_memory.with_huge_pages(environ).get("GLIBC_TUNABLES")
  assert out.splitlines() == [str(expected)]
