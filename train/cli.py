"""What the command-line programs (train/main.py, tools/*.py) share: flag errors in one line."""
import logging
import os
import sys

from absl import flags


def parse_flags(argv):
  """absl's parser, with a bad --config.x=y (unknown field, wrong type) as one line."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    sys.exit(f"error: bad flag ({e}); check the field's name and type in the config file")


class QuietLibraries(logging.Filter):
  """Keeps orbax's and grain's routine INFO lines out of a run's log; warnings pass."""

  def filter(self, record):
    noisy = any(f"{os.sep}{lib}{os.sep}" in record.pathname for lib in ("orbax", "grain"))
    return record.levelno >= logging.WARNING or not noisy
