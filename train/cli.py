"""What the command-line programs (train/main.py, tools/*.py) share: flag errors in one line."""
import sys

from absl import flags


def parse_flags(argv):
  """absl's parser, with a bad --config.x=y (unknown field, wrong type) as one line."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    sys.exit(f"error: bad flag ({e}); check the field's name and type in the config file")
