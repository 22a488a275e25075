"""Fine-tuning: starting from another run's parameters, and freezing some of them."""
import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.conftest import tiny_config
from train import init_from, pretrained, trainer
from train.experiment import Experiment
from train.init_from import InitFrom


def _batch(config):
  rows = (config.train.batch_size, config.data.seq_len)
  ids = np.arange(rows[0] * rows[1], dtype=np.int32).reshape(rows) % 97 + 5
  return {"inputs": ids, "targets": np.roll(ids, -1, axis=1), "weights": np.ones(rows, np.float32),
          "segment_ids": np.ones(rows, np.int32), "target_bytes": np.ones(rows, np.int32),
          "positions": np.broadcast_to(np.arange(rows[1], dtype=np.int32), rows)}


def _array_bytes(tree) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def test_frozen_parameters_stay_bitwise_and_keep_no_optimizer_state(text_dir, data_dir):
  config = tiny_config(text_dir, data_dir)
  config.train.frozen = "embed,stack/layers/0/"
  experiment = Experiment(config)
  state = before = experiment.create_state()
  before = jax.tree.map(np.asarray, before.params)
  step = experiment.jit_train_step()
  for _ in range(3):
    state, metrics = step(state, _batch(config))
  after = init_from.param_paths(jax.tree.map(np.asarray, state.params))
  frozen = {k for k in after if k.startswith(("embed/", "stack/layers/0/"))}
  assert frozen and len(frozen) < len(after)
  for name, value in init_from.param_paths(before).items():
    if name in frozen:
      np.testing.assert_array_equal(value, after[name], err_msg=name)
    else:
      assert not np.array_equal(value, after[name]), name
  # Adam's two moments of every trainable parameter, and nothing of the frozen ones;
  # the only other arrays are the scalar step counters.
  trainable_bytes = sum(v.nbytes for k, v in after.items() if k not in frozen)
  moments = [x for x in jax.tree.leaves(state.opt_state) if x.ndim]
  assert sum(x.nbytes for x in moments) == 2 * trainable_bytes
  assert _array_bytes(state.opt_state) - 2 * trainable_bytes < 64


@pytest.mark.parametrize("field, pattern, message", [
    ("frozen", "no_such_layer", r"config.train.frozen: 'no_such_layer' matches no parameter"),
    ("trainable", "head(", r"config.train.trainable: 'head\(' is not a regex"),
    ("frozen", ".", "leave no parameter to train")])
def test_a_freeze_pattern_that_matches_nothing_fails_in_one_line(text_dir, data_dir, field,
                                                                 pattern, message):
  config = tiny_config(text_dir, data_dir)
  config.train[field] = pattern
  with pytest.raises(ValueError, match=message) as error:
    Experiment(config)
  assert "\n" not in str(error.value)


def test_init_from_a_converted_directory_loads_matching_names(text_dir, data_dir, tmp_path):
  """An encoder saved without token types: the new model's token-type table starts fresh."""
  source = tiny_config(text_dir, data_dir, "bert_tiny")
  saved = Experiment(source).create_state(seed=7).params
  pretrained.save_params(str(tmp_path / "converted"), source, saved)
  config = tiny_config(text_dir, data_dir, "bert_tiny")
  config.model.num_token_types = 2
  experiment = Experiment(config)
  plan = InitFrom.check(str(tmp_path / "converted"), experiment.abstract_params)
  assert plan.new == ("token_types/table",) and plan.left_out == ()
  fresh = experiment.create_state(seed=0).params
  loaded = init_from.param_paths(plan.restore(fresh, experiment.state_shardings.params))
  saved, fresh = init_from.param_paths(saved), init_from.param_paths(fresh)
  for name, value in loaded.items():
    np.testing.assert_array_equal(value, saved.get(name, fresh[name]), err_msg=name)
    assert value.sharding == init_from.param_paths(experiment.state_shardings.params)[name]

  config.model.num_token_types, config.model.mlp_dim = 0, 48
  with pytest.raises(ValueError, match=r"parameter stack/layers/0/mlp/wi/bias has shape \(64,\) "
                                       r"there but \(48,\)"):
    InitFrom.check(str(tmp_path / "converted"), Experiment(config).abstract_params)
  with pytest.raises(ValueError, match="config.init_from='/nowhere' does not exist"):
    InitFrom.check("/nowhere", experiment.abstract_params)
  with pytest.raises(ValueError, match="holds neither params/"):
    InitFrom.check(str(tmp_path), experiment.abstract_params)


@pytest.mark.slow
def test_fine_tuning_starts_from_a_workdir_and_resumes_without_it(text_dir, data_dir,
                                                                  tmp_path):
  config = tiny_config(text_dir, data_dir)
  config.sample.num_prompts = 0
  base = str(tmp_path / "base")
  # A workdir's checkpoint as the trainer lays it out (checkpoints/<step>/state).
  saver = ocp.StandardCheckpointer()
  saver.save(os.path.join(base, "checkpoints", "2", "state"),
             Experiment(config).create_state(seed=5))
  saver.wait_until_finished()
  config.init_from = base
  config.train.num_steps, config.train.frozen = 4, "stack/layers/0/"
  tuned = str(tmp_path / "tuned")
  trainer.train(config, tuned)
  base_params, tuned_params = _saved_params(base, 2), _saved_params(tuned, 4)
  changed = {k for k, v in tuned_params.items() if not np.array_equal(v, base_params[k])}
  assert changed and not any(k.startswith("stack/layers/0/") for k in changed)
  # Resuming reads the run's own checkpoint and never init_from (gone by now).
  shutil.rmtree(base)
  shutil.rmtree(os.path.join(tuned, "checkpoints", "4"))
  assert trainer.train(config, tuned)["step"] == 4


def _saved_params(workdir, step):
  state = ocp.PyTreeCheckpointer().restore(os.path.join(workdir, "checkpoints", str(step),
                                                        "state"))
  return init_from.param_paths(jax.tree.map(np.asarray, state["params"]))
