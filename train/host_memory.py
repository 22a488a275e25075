"""The host memory of a training process: what compiling freed goes back to the operating
system, and the step's buffers come in huge pages.

XLA's compiler allocates and frees hundreds of MiB on several threads; glibc's malloc keeps
what they free in per-thread arenas, so the process's resident memory stays at the
compile's high-water mark and the step's buffers come on top of it. `malloc_trim(0)`
returns the free pages of every arena.

XLA:CPU allocates a step's temporaries as one block (hundreds of MiB at the benchmark's
reference shape) and frees it when the step ends. glibc serves a block that large with a
fresh `mmap` each time, so every step faults its temporaries in again, 4 KiB at a time.
Told `glibc.malloc.hugetlb=1`, glibc asks the kernel for transparent huge pages on such
blocks, and a step takes one fault per 2 MiB instead.
glibc reads its tunables only when a process starts, so the programs that train
(train/main.py and the tools that run steps) call `restart_with_huge_pages` first thing.
docs/performance.md has the figures. Elsewhere than glibc (macOS, musl) both do nothing.
"""
import ctypes
import ctypes.util
import functools
import importlib.util
import os
import sys

TUNABLES = "GLIBC_TUNABLES"
HUGE_PAGES = "glibc.malloc.hugetlb=1"
# Set by the restart: the user's own GLIBC_TUNABLES ("" if none), so that the processes a
# tool starts for other programs (the benchmark's PyTorch peers) get the user's environment.
USERS_TUNABLES = "TRIFORM_USERS_GLIBC_TUNABLES"
_THP_MODE = "/sys/kernel/mm/transparent_hugepage/enabled"


@functools.cache
def _glibc_malloc_trim():
  """glibc's malloc_trim, or None where the C library has none."""
  name = ctypes.util.find_library("c")
  libc = ctypes.CDLL(name) if name else None
  return getattr(libc, "malloc_trim", None)


def release_freed_memory() -> bool:
  """Returns the C heap's free pages to the OS; True if any were returned."""
  trim = _glibc_malloc_trim()
  return bool(trim and trim(0))


def glibc_version() -> tuple[int, ...] | None:
  """The running C library's version if it is glibc, else None."""
  try:
    name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
  except (ValueError, OSError, AttributeError):  # not glibc, or no confstr (macOS, Windows)
    return None
  return tuple(int(part) for part in version.split(".")[:2]) if name == "glibc" else None


def transparent_huge_page_mode() -> str | None:
  """The kernel's transparent huge page setting ('always', 'madvise', 'never'), or None
  where there is none (not Linux)."""
  try:
    with open(_THP_MODE) as setting:
      return setting.read().split("[", 1)[1].split("]", 1)[0]
  except (OSError, IndexError):
    return None


def huge_page_environ(environ, libc: tuple[int, ...] | None,
                      thp_mode: str | None) -> dict[str, str] | None:
  """`environ` with glibc told to back large blocks with huge pages, or None where that
  would change nothing: the C library is not glibc 2.35+ (the first with the tunable); the
  kernel's mode is not 'madvise' (huge pages on request: 'always' gives them unasked,
  'never' not at all); the user already chose (GLIBC_TUNABLES names glibc.malloc.hugetlb);
  or the process was restarted already."""
  tunables = environ.get(TUNABLES, "")
  if (USERS_TUNABLES in environ or "glibc.malloc.hugetlb" in tunables or libc is None
      or libc < (2, 35) or thp_mode != "madvise"):
    return None
  return {**environ, USERS_TUNABLES: tunables,
          TUNABLES: f"{tunables}:{HUGE_PAGES}" if tunables else HUGE_PAGES}


def with_huge_pages(environ) -> dict[str, str]:
  """`environ` as `restart_with_huge_pages` leaves it on this machine: for starting a
  training process from another one."""
  return huge_page_environ(environ, glibc_version(), transparent_huge_page_mode()) or dict(
      environ)


def users_environ(environ) -> dict[str, str]:
  """`environ` as the user gave it, without what `restart_with_huge_pages` added."""
  if USERS_TUNABLES not in environ:
    return dict(environ)
  users = {k: v for k, v in environ.items() if k not in (TUNABLES, USERS_TUNABLES)}
  if environ[USERS_TUNABLES]:
    users[TUNABLES] = environ[USERS_TUNABLES]
  return users


def started_this_program(orig_argv: list[str], argv: list[str]) -> bool:
  """Whether the interpreter's command line (`sys.orig_argv`) runs the program whose
  `sys.argv` this is (`python path/to/program.py ARGS` or `python -m package.program ARGS`),
  not another one that runs it inside itself (a notebook kernel's `%run`)."""
  if len(orig_argv) <= len(argv) or orig_argv[len(orig_argv) - len(argv) + 1:] != argv[1:]:
    return False
  program = orig_argv[len(orig_argv) - len(argv)]
  if program == argv[0]:
    return True
  try:
    spec = importlib.util.find_spec(program)
  except (ImportError, ValueError):  # not a module name
    return False
  return spec is not None and spec.origin == argv[0]


def restart_with_huge_pages() -> None:
  """Re-executes this program, with the same command line, under `huge_page_environ`;
  returns without restarting where that is None or where the interpreter was started for
  another program. Call it before anything else runs."""
  environ = huge_page_environ(os.environ, glibc_version(), transparent_huge_page_mode())
  if environ is not None and started_this_program(sys.orig_argv, sys.argv):
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environ)
