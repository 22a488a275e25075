"""Command line: train or resume one experiment.

  python -m train.main --config=configs/gpt_tiny.py --workdir=/tmp/triform/gpt_tiny \
      [--config.train.num_steps=1000 ...]

Rerunning the same command on the same workdir resumes from its latest checkpoint.
"""
import logging as std_logging
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from train import cli, report, trainer

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the run: config, checkpoints, metrics.")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries(std_logging.Filter):
  """Keeps orbax's and grain's routine INFO lines out of the run's log; warnings pass."""

  def filter(self, record):
    noisy = any(f"{os.sep}{lib}{os.sep}" in record.pathname for lib in ("orbax", "grain"))
    return record.levelno >= std_logging.WARNING or not noisy


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_QuietLibraries())
  try:
    summary = trainer.train(_CONFIG.value, _WORKDIR.value)
  except ValueError as e:  # bad config or data: one line, nothing touched
    sys.exit(f"error: {e}")
  print(report.format_summary(summary))


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
