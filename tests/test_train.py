"""The train loop: loss falls, resume is exact, bad flags fail in one line without touching work."""
import json
import re
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.conftest import command_line, tiny_config, train_losses
from train import input_pipeline, objectives, trainer
from train.experiment import Experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_loss_on_a_fixed_batch_decreases(built, text_dir, data_dir):
  config = tiny_config(text_dir, data_dir)
  _, builder, tok = built
  batch = next(iter(input_pipeline.make_dataset(
      builder.as_data_source("train"), tok, objective=objectives.CausalLM(32, tok.specials), batch_size=4,
      seed=0, train=True)))
  config.train.num_steps = 20
  losses, _ = train_losses(Experiment(config), batch, 15)
  assert losses[-1] < 0.8 * losses[0], losses


def _params(workdir, step):
  import orbax.checkpoint as ocp
  restored = ocp.PyTreeCheckpointer().restore(os.path.join(workdir, "checkpoints", str(step),
                                                           "state"))
  return restored


def test_resume_after_losing_the_last_checkpoint_is_bit_exact(text_dir, data_dir, tmp_path):
  config = tiny_config(text_dir, data_dir)
  straight = str(tmp_path / "straight")
  trainer.train(config, straight)
  # Simulate a crash after step 4 of the same run: the checkpoint of step 6 never existed.
  resumed = str(tmp_path / "resumed")
  shutil.copytree(straight, resumed)
  shutil.rmtree(os.path.join(resumed, "checkpoints", "6"))
  summary = trainer.train(config, resumed)
  assert summary["step"] == 6 and summary["initial_bits_per_byte"] is None
  a, b = _params(straight, 6), _params(resumed, 6)
  assert int(a["step"]) == int(b["step"]) == 6
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # params and optimizer state


def _main(*flags, env=None):
  return subprocess.run([sys.executable, "-m", "train.main", *flags], capture_output=True,
                        text=True, cwd=ROOT, env=env)


def _tiny_flags(text_dir, data_dir, workdir):
  return command_line("gpt_tiny", tiny_config(text_dir, data_dir), workdir)


def _snapshot(directory):
  out = {}
  for root, _, files in os.walk(directory):
    for f in files:
      path = os.path.join(root, f)
      with open(path, "rb") as fh:
        out[path] = fh.read()
  return out


def test_cli_overrides_train_and_bad_input_fails_in_one_line(text_dir, data_dir, tmp_path):
  workdir = str(tmp_path / "run")
  flags = _tiny_flags(text_dir, data_dir, workdir)
  ok = _main(*flags, "--config.model.num_layers=1")
  assert ok.returncode == 0, ok.stderr[-3000:]
  assert json.load(open(os.path.join(workdir, "config.json")))["model"]["num_layers"] == 1
  assert "Validation bits per byte" in ok.stdout
  before = _snapshot(workdir)
  empty = tmp_path / "empty"
  empty.mkdir()
  (empty / "a.txt").write_text("")
  cases = {
      "workdir .* was made by a different config .*model.num_layers": ["--config.model.num_layers=2"],
      "matches no files": [f"--config.data.source={tmp_path}/missing/*.txt"],
      "are empty": [f"--config.data.source={empty}/*.txt"],
      "config.mesh=.* needs 3 devices but 1 are present": ["--config.mesh.data=3"],
      "config.model.num_kv_heads=3 must divide": ["--config.model.num_kv_heads=3"],
      "config.model.position='alibi' is not one of": ["--config.model.position=alibi"],
  }
  for message, extra in cases.items():
    result = _main(*flags, *extra)
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert last.startswith("error: "), last
    assert re.search(message, last), last
  unknown = _main(*flags, "--config.train.no_such_field=1")
  assert unknown.returncode != 0 and "no_such_field" in unknown.stderr
  assert "Traceback" not in unknown.stderr, unknown.stderr[-2000:]
  assert _snapshot(workdir) == before  # no failure touched the existing run


@pytest.mark.parametrize("name", ["bert_tiny", "t5_tiny", "gpt_prefixlm_tiny", "t5_lm_tiny",
                                  "compare.decoder_denoising"])
def test_every_family_and_objective_trains_end_to_end(text_dir, data_dir, tmp_path, name):
  config = tiny_config(text_dir, data_dir, name)
  config.train.num_steps, config.train.eval_every = 12, 6
  config.optim.learning_rate = 1e-2
  summary = trainer.train(config, str(tmp_path / name))
  assert summary["step"] == 12
  # 12 steps at width 32: every pair must cut its eval perplexity by over a fifth.
  assert summary["final_loss"] < summary["initial_loss"] - 0.25, summary
  records = [json.loads(line) for line in open(tmp_path / name / "metrics.jsonl")]
  final = [r for r in records if r["split"] == "validation_full" and "loss" in r][-1]
  assert {"loss", "accuracy", "perplexity", "bits_per_byte"} <= set(final), final
  assert final["objective"] == config.objective


def test_nothing_compiles_after_the_first_step(text_dir, data_dir, tmp_path, monkeypatch):
  """Counts XLA compilations as the loop runs: once step 1 is logged, later steps,
  evaluations and checkpoint saves compile nothing."""
  from jax._src import dispatch, monitoring
  config = tiny_config(text_dir, data_dir)
  config.train.num_steps, config.train.log_every = 9, 1
  compiles, at_step = [], {}
  listener = lambda event, seconds, **kw: compiles.append(event)
  monitoring.register_event_duration_secs_listener(listener)
  write = trainer.MetricsWriter.write

  def counting_write(self, step, split, values, **context):
    if split == "train":
      at_step[step] = compiles.count(dispatch.BACKEND_COMPILE_EVENT)
    write(self, step, split, values, **context)

  monkeypatch.setattr(trainer.MetricsWriter, "write", counting_write)
  try:
    trainer.train(config, str(tmp_path / "run"))
  finally:
    monitoring.unregister_event_duration_listener(listener)
  assert sorted(at_step) == list(range(1, 10))
  # Steps 3 and 6 also ran a periodic evaluation, even steps saved a checkpoint.
  assert at_step[1] > 0 and set(at_step.values()) == {at_step[1]}, at_step
