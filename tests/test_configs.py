"""Every config file loads, builds a valid model config, and the published sizes count right."""
import glob
import importlib
import os

import pytest

from model import count_params, model_config
from train import validation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Module names under configs/ ("gpt_tiny", "compare.decoder_lm").
CONFIG_FILES = sorted(os.path.relpath(p, os.path.join(ROOT, "configs"))[:-3].replace(os.sep, ".")
                      for p in glob.glob(os.path.join(ROOT, "configs", "**", "*.py"), recursive=True)
                      if not p.endswith(("__init__.py", "common.py", "fields.py")))
# Parameter counts of the published models as HF `transformers` builds them
# (tests/test_convert_hf.py checks each against transformers itself).
PUBLISHED = {"bert_base": 109_514_298, "gpt_small": 124_439_808, "gpt_medium": 354_823_168,
             "t5_base": 222_903_552, "t5_1_1_base": 247_577_856}


def load(name):
  return importlib.import_module(f"configs.{name}").get_config()


def test_every_family_has_a_tiny_and_a_published_size():
  assert {"bert_tiny", "gpt_tiny", "t5_tiny"} | set(PUBLISHED) <= set(CONFIG_FILES)


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_config_builds_a_valid_model(name):
  config = load(name)
  cfg = model_config(config)
  assert cfg.family == config.model.family
  # Counting runs eval_shape: full-size models are sized without allocating anything.
  count = count_params(cfg)
  if name in PUBLISHED:
    assert count == PUBLISHED[name]


@pytest.mark.parametrize("field, value, message", [
    ("num_heads", 3, "config.model.num_heads=3 must divide config.model.embed_dim=128"),
    ("num_kv_heads", 3, "config.model.num_kv_heads=3 must divide config.model.num_heads=4"),
    ("position", "alibi", "config.model.position='alibi' is not one of"),
    ("activation", "mish", "config.model.activation='mish' is not one of"),
    ("norm_position", "sandwich", "config.model.norm_position='sandwich' is not one of"),
    ("family", "rnn", "config.model.family='rnn' is not one of"),
    ("remat", "some", "config.model.remat='some' is not one of"),
    ("num_token_types", 2, "config.model.num_token_types=2 is only for family 'encoder'"),
    ("num_decoder_layers", 2,
     "config.model.num_decoder_layers=2 is only for family 'encoder_decoder'"),
    ("pooler", True, "config.model.pooler=True: the field was removed"),
])
def test_impossible_model_settings_fail_naming_the_field(field, value, message):
  config = load("gpt_tiny")
  config.model[field] = value
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
    model_config(config)


def test_unknown_model_setting_is_named():
  config = load("gpt_tiny")
  config.unlock()
  config.model.num_experts = 8
  with pytest.raises(ValueError, match="config.model.num_experts is not a model setting"):
    model_config(config)


@pytest.mark.parametrize("name,chunk,scored", [("gpt_tiny", 48, 128), ("bert_tiny", 16, 19)])
def test_a_loss_chunk_that_does_not_divide_the_scored_positions_is_refused(name, chunk, scored):
  from train.experiment import Experiment
  config = load(name)
  config.train.loss_chunk = chunk
  with pytest.raises(ValueError, match=f"loss_chunk={chunk} must divide the {scored} positions"):
    Experiment(config)
  config.train.loss_chunk = scored  # a divisor of itself
  Experiment(config)


def test_workdir_config_is_never_seen_half_written(tmp_path, monkeypatch):
  """Hosts of a multi-host run write config.json at once; a host that reads it while
  another writes must find nothing or the whole file (once, a host read it empty)."""
  config, workdir = load("gpt_tiny"), str(tmp_path)

  def write_half_then_fail(obj, f, **kwargs):
    f.write("{")
    raise OSError("disk full")

  monkeypatch.setattr(validation.json, "dump", write_half_then_fail)
  with pytest.raises(OSError, match="disk full"):
    validation.check_workdir_config(workdir, config)
  assert not os.path.exists(os.path.join(workdir, "config.json"))
  monkeypatch.undo()
  validation.check_workdir_config(workdir, config)
  validation.check_workdir_config(workdir, config)  # the same config resumes
  config.model.num_layers += 1
  with pytest.raises(ValueError, match="different config .*model.num_layers"):
    validation.check_workdir_config(workdir, config)
