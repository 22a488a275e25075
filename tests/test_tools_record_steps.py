"""tools/record_steps: recordings are compared bit for bit, and differences are named."""
import ast
import importlib

import numpy as np
import pytest

from tools import record_steps
from train import validation


def _recording(loss_bits=0):
  losses = np.array([5.5, 5.25, 5.0])
  losses.view(np.int64)[-1] += loss_bits  # one bit further, in the last place
  return {"gpt_tiny/losses": losses, "gpt_tiny/validation_loss": np.array([5.1]),
          "gpt_tiny/params/embed/embedding": np.arange(6, dtype=np.float32).reshape(2, 3)}


def test_identical_recordings_compare_equal():
  assert record_steps.compare(_recording(), _recording()) == [
      "gpt_tiny: identical (3 losses, last 5.000000; 1 parameter arrays)"]


def test_one_bit_or_one_missing_array_is_a_difference():
  [line] = record_steps.compare(_recording(), _recording(loss_bits=1))
  assert line.startswith("gpt_tiny: DIFFERENT: 1 arrays differ (gpt_tiny/losses)")
  fewer = _recording()
  del fewer["gpt_tiny/params/embed/embedding"]
  [line] = record_steps.compare(_recording(), fewer)
  assert "1 missing (gpt_tiny/params/embed/embedding)" in line


@pytest.mark.parametrize("name", record_steps.TINY)
def test_the_recorded_runs_pass_the_trainers_config_checks(name):
  """train.main refuses a config that fails these checks, so a recording would stop."""
  config = None
  for flag in record_steps.config_flags(name, 30):
    key, value = flag.removeprefix("--").split("=")
    if key == "config":  # the file comes first, then the fields it overrides
      config = importlib.import_module(value.removesuffix(".py").replace("/", ".")).get_config()
    else:
      section, field = key.removeprefix("config.").split(".")
      config[section][field] = ast.literal_eval(value)
  validation.validate(config, batch_divisor=1)
