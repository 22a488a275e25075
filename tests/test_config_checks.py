"""Every numeric config field has a declared range; values outside it, and fields that do not
fit each other, fail in one line naming the field, the value and what is allowed."""
import importlib

import pytest

from configs import common, fields
from configs.fields import Num
from tests.test_configs import CONFIG_FILES
from train import validation
from train.experiment import Experiment


def _configs():
  yield "base_config", common.base_config()
  for name in CONFIG_FILES:
    yield name, importlib.import_module(f"configs.{name}").get_config()


def test_every_numeric_field_of_every_config_has_a_declared_range():
  declared = common.numeric_fields()
  for name, config in _configs():
    undeclared = sorted(set(fields.numeric_leaves(config)) - set(declared))
    assert not undeclared, f"{name}: numeric fields without Num(...) in configs/common.py"
    validation.check_fields(config)  # every shipped config is inside the ranges


def test_declarations_are_the_defaults_and_explain_themselves():
  declared = common.numeric_fields()
  defaults = fields.numeric_leaves(common.base_config())
  assert set(declared) == set(defaults)
  for path, num in declared.items():
    assert num.default == defaults[path] and type(num.default) is type(defaults[path]), path
    assert num.meaning and "\n" not in num.meaning, path


@pytest.mark.parametrize("allowed, inside, outside", [
    ("(0, inf)", [1e-9, 3.0], [0.0, -1.0, float("inf"), float("nan")]),
    ("[0, 1)", [0.0, 0.5], [1.0, -1e-9]),
    ("[1, 99]", [1, 99], [0, 100]),
    ("-1 | [1, inf)", [-1, 1, 7], [0, -2]),
])
def test_allowed_values_are_unions_of_intervals_and_points(allowed, inside, outside):
  num = Num(inside[0], allowed, "a test field")
  assert all(num.admits(v) for v in inside)
  assert not any(num.admits(v) for v in outside)


def test_an_int_field_refuses_floats_and_bools():
  num = Num(2, "[1, inf)", "a count")
  assert num.admits(3) and not num.admits(3.0) and not num.admits(True)


def test_a_default_outside_its_own_range_fails_at_declaration():
  with pytest.raises(ValueError, match=r"default 0 is outside its own range \[1, inf\)"):
    Num(0, "[1, inf)", "a count")


@pytest.mark.parametrize("path, value, message", [
    ("optim.learning_rate", -1.0, "config.optim.learning_rate=-1.0 must be in (0, inf) "
     "(peak learning rate, after warmup)"),
    ("model.dropout_rate", 1.0, "config.model.dropout_rate=1.0 must be in [0, 1) "),
    ("train.eval_every", 0, "config.train.eval_every=0 must be an integer in [1, inf) "),
    ("train.eval_batches", 0, "config.train.eval_batches=0 must be an integer, -1 or in [1, inf) "),
    ("mesh.tensor", -2, "config.mesh.tensor=-2 must be an integer, -1 or in [1, inf) "),
    ("optim.b2", 1.0, "config.optim.b2=1.0 must be in [0, 1) "),
    ("data.validation_percent", 100, "config.data.validation_percent=100 must be an integer in "
     "[1, 99] "),
])
def test_a_field_out_of_range_fails_before_the_mesh_is_built(path, value, message):
  config = importlib.import_module("configs.gpt_tiny").get_config()
  section, name = path.split(".")
  config[section][name] = value
  with pytest.raises(ValueError) as raised:
    Experiment(config)
  assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


@pytest.mark.parametrize("overrides, message", [
    ({"optim.warmup_steps": 601}, "config.optim.warmup_steps=601 exceeds config.train.num_steps=600"),
    ({"train.inject_nan_at_step": 601}, "config.train.inject_nan_at_step=601 is after the last step"),
    ({"train.keep_checkpoints_every": 150},
     "config.train.keep_checkpoints_every=150 is not a multiple of config.train.checkpoint_every=100"),
    ({"train.microbatches": 3}, "config.train.microbatches=3 must divide each of the 1 batch shards"),
    ({"model.position": "learned", "data.seq_len": 512},
     "config.model.max_length=128 is shorter than config.data.seq_len=512"),
    ({"model.qk_norm": True, "model.scale_attention": False},
     "config.model.qk_norm=True needs config.model.scale_attention=True"),
    ({"data.data_dir": "gs://bucket/data"},
     "config.data.data_dir='gs://bucket/data': a URL cannot hold the built corpora"),
])
def test_fields_that_do_not_fit_each_other_fail_naming_both(overrides, message):
  config = importlib.import_module("configs.gpt_tiny").get_config()
  for path, value in overrides.items():
    section, name = path.split(".")
    config[section][name] = value
  with pytest.raises(ValueError, match=message):
    Experiment(config)
