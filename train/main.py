"""Command line: train or resume one experiment, or evaluate its latest checkpoint.

  python -m train.main --config=configs/gpt_tiny.py --workdir=/tmp/triform/gpt_tiny \
      [--config.train.num_steps=1000 ...] [--mode=eval]

Rerunning the same command on the same workdir resumes from its latest checkpoint.
Exit codes: 0 done, 1 bad input, a workdir another run holds, a non-finite loss or a
checkpoint that could not be written (one line on stderr),
75 preempted after saving a checkpoint (rerun to resume).

On a Cloud TPU pod, jax.distributed finds its peers by itself. Elsewhere, start
one process per host with --coordinator_address=HOST:PORT --num_processes=N
--process_id=I.
"""
import glob
import json
import sys

from train import host_memory

if __name__ == "__main__":  # before JAX loads: glibc reads its tunables only at start
  host_memory.restart_with_huge_pages()

from absl import app, flags, logging
import jax
from ml_collections import config_flags

from train import checkpoint, cli, guards, report, trainer, workdir_lock

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the run: config, checkpoints, metrics.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"],
                          "train: train or resume; eval: score the latest checkpoint, change nothing.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0, for multi-host runs off Cloud TPU.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of host processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This host's index.")
_ACCEPT_CHANGED_DATA = flags.DEFINE_bool(
    "accept_changed_data", False, "Resume even though the data differs from what the run "
    "began with (the change is recorded in workdir/data_fingerprint.json).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(cli.QuietLibraries())
  _init_distributed()
  try:
    if _MODE.value == "eval":
      print(json.dumps(trainer.evaluate_workdir(_CONFIG.value, _WORKDIR.value), indent=2))
      return
    summary = trainer.train(_CONFIG.value, _WORKDIR.value,
                            accept_changed_data=_ACCEPT_CHANGED_DATA.value)
  except (ValueError, OSError, guards.NonFiniteError, checkpoint.CheckpointWriteError,
          workdir_lock.WorkdirLost) as e:  # bad input, divergence, a failed read or write
    sys.exit(f"error: {e}")
  except guards.Preempted as e:
    logging.warning("%s", e)
    sys.exit(guards.PREEMPTED_EXIT_CODE)
  print(report.format_summary(summary))


def _init_distributed():
  """Joins the other hosts: from the flags if given, else by itself on a Cloud TPU pod."""
  if _COORDINATOR.value:
    # Hosts without TPUs (CPU tests, clusters of CPUs) exchange collectives over gloo.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
  elif glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"):
    # A Cloud TPU VM (its chips appear as these devices): JAX finds the slice's
    # other hosts from the TPU metadata; on a single host it is a no-op.
    jax.distributed.initialize()


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
