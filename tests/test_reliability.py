"""Runs that die come back exactly; broken checkpoints and NaNs lose nothing.

The killed runs are real `python -m train.main` processes, stopped with
SIGKILL or SIGTERM at a step chosen at random (seeded), then rerun with the
same command; they are compared with a run that was never interrupted.
"""
import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.conftest import command_line, tiny_config
from train import guards, trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 10


def _config(text_dir, data_dir, name):
  c = tiny_config(text_dir, data_dir, name)
  c.train.num_steps, c.train.log_every, c.train.checkpoint_every = STEPS, 1, 2
  c.train.eval_every, c.train.keep_checkpoints = 100, 10
  c.sample.num_prompts = 0
  return c


def _start(name, config, workdir, env=None):
  return subprocess.Popen([sys.executable, "-m", "train.main", *command_line(name, config, workdir)],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env)


def _train_records(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    lines = [json.loads(l) for l in f.read().splitlines() if l.strip().endswith("}")]
  return [r for r in lines if r["split"] == "train"]


# train.main, with a signal sent to itself right after step $SIGNAL_AT_STEP is logged: a
# preemption or a kill at an exact step, however fast the steps run.
_SIGNALLED_MAIN = """
import os, signal, sys
from absl import app
from train import cli, main, metrics
write = metrics.MetricsWriter.write
def write_then_signal(self, step, split, values, **context):
  write(self, step, split, values, **context)
  if split == "train" and step == int(os.environ["SIGNAL_AT_STEP"]):
    os.kill(os.getpid(), getattr(signal, os.environ["SIGNAL"]))
metrics.MetricsWriter.write = write_then_signal
app.run(main.main, argv=["train.main"] + sys.argv[1:], flags_parser=cli.parse_flags)
"""


def _start_signalled(name, config, workdir, step: int, sig: str):
  env = dict(os.environ, SIGNAL_AT_STEP=str(step), SIGNAL=sig)
  return subprocess.Popen([sys.executable, "-c", _SIGNALLED_MAIN,
                           *command_line(name, config, workdir)],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env)


def _state(workdir, step):
  """The saved train state as numpy arrays, whatever mesh wrote it."""
  path = os.path.join(workdir, "checkpoints", str(step), "state")
  checkpointer = ocp.PyTreeCheckpointer()
  as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                          checkpointer.metadata(path).item_metadata.tree)
  return checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=as_numpy))


def _assert_same_state(a, b):
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b) > 0
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # bitwise


def _last_per_step(records):
  return {r["step"]: r for r in records}


def _assert_same_metrics_after(step, straight, resumed):
  a, b = _last_per_step(_train_records(straight)), _last_per_step(_train_records(resumed))
  later = [s for s in b if s > step]
  assert later
  for s in later:
    for key in ("loss", "grad_norm", "learning_rate", "bits_per_byte"):
      assert a[s][key] == b[s][key], (s, key)


@pytest.fixture(scope="module")
def straight_runs(text_dir, data_dir, tmp_path_factory):
  """Uninterrupted runs per config, trained in this process."""
  runs = {}
  for name in ("gpt_tiny", "bert_tiny", "t5_tiny"):
    workdir = str(tmp_path_factory.mktemp(f"straight_{name}"))
    trainer.train(_config(text_dir, data_dir, name), workdir)
    runs[name] = workdir
  return runs


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gpt_tiny", "bert_tiny", "t5_tiny"])
def test_sigkill_at_a_random_step_then_rerun_is_bit_exact(text_dir, data_dir, tmp_path,
                                                          straight_runs, name):
  config = _config(text_dir, data_dir, name)
  workdir = str(tmp_path / "killed")
  kill_at = random.Random(name).randint(3, STEPS - 2)
  process = _start_signalled(name, config, workdir, kill_at, "SIGKILL")
  _, err = process.communicate(timeout=600)
  assert process.returncode == -signal.SIGKILL, err[-3000:]
  saved = max(int(os.path.basename(p)) for p in glob.glob(os.path.join(workdir, "checkpoints", "*"))
              if os.path.basename(p).isdigit())
  assert saved < STEPS  # it really died before the end
  rerun = _start(name, config, workdir)
  _, err = rerun.communicate(timeout=600)
  assert rerun.returncode == 0, err[-3000:]
  _assert_same_state(_state(straight_runs[name], STEPS), _state(workdir, STEPS))
  _assert_same_metrics_after(saved, straight_runs[name], workdir)


@pytest.mark.slow
def test_sigterm_saves_the_step_it_was_at_and_exits_75(text_dir, data_dir, tmp_path,
                                                      straight_runs):
  name = "gpt_tiny"
  config = _config(text_dir, data_dir, name)
  config.train.checkpoint_every = 100  # only the preemption save can write mid-run
  workdir = str(tmp_path / "preempted")
  process = _start_signalled(name, config, workdir, 4, "SIGTERM")
  _, err = process.communicate(timeout=300)
  assert process.returncode == guards.PREEMPTED_EXIT_CODE, err[-3000:]
  reached = max(r["step"] for r in _train_records(workdir))
  steps = sorted(int(os.path.basename(p)) for p in glob.glob(os.path.join(workdir, "checkpoints",
                                                                          "*")))
  # Step 1 is always saved (orbax's first save); then only the preemption's.
  assert steps == [1, reached] and 4 <= reached < STEPS
  rerun = _start(name, config, workdir)
  _, err = rerun.communicate(timeout=600)
  assert rerun.returncode == 0, err[-3000:]
  _assert_same_state(_state(straight_runs["gpt_tiny"], STEPS), _state(workdir, STEPS))


def _damage(workdir, step, how):
  state_dir = os.path.join(workdir, "checkpoints", str(step), "state")
  files = [p for p in glob.glob(os.path.join(state_dir, "**", "*"), recursive=True)
           if os.path.isfile(p)]
  biggest = max(files, key=os.path.getsize)
  if how == "truncated":
    with open(biggest, "r+b") as f:
      f.truncate(os.path.getsize(biggest) // 2)
  else:
    os.remove(biggest)


@pytest.mark.parametrize("how", ["truncated", "deleted"])
def test_damaged_checkpoint_is_set_aside_and_the_one_before_used(text_dir, data_dir, tmp_path,
                                                                 straight_runs, how):
  config = _config(text_dir, data_dir, "gpt_tiny")
  workdir = str(tmp_path / "damaged")
  shutil.copytree(straight_runs["gpt_tiny"], workdir)  # the same run, trained once
  _damage(workdir, STEPS, how)
  before = {p: os.path.getsize(p) for p in glob.glob(os.path.join(workdir, "checkpoints", "*",
                                                                  "**", "*"), recursive=True)
            if os.path.isfile(p) and f"{os.sep}{STEPS}{os.sep}" not in p}
  summary = trainer.train(config, workdir)
  assert summary["step"] == STEPS
  aside = glob.glob(os.path.join(workdir, "checkpoints_unreadable", f"{STEPS}-*"))
  assert len(aside) == 1  # kept for inspection, not deleted
  for path, size in before.items():  # no other checkpoint was touched
    assert os.path.getsize(path) == size, path
  _assert_same_state(_state(straight_runs["gpt_tiny"], STEPS), _state(workdir, STEPS))


def test_nan_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(
    text_dir, data_dir, tmp_path, straight_runs):
  config = _config(text_dir, data_dir, "gpt_tiny")
  config.train.inject_nan_at_step = 5
  workdir = str(tmp_path / "nan")
  with pytest.raises(guards.NonFiniteError, match="non-finite loss or gradient at step 5"):
    trainer.train(config, workdir)
  steps = sorted(int(os.path.basename(p)) for p in glob.glob(os.path.join(workdir, "checkpoints",
                                                                          "*")))
  assert max(steps) == 4  # nothing at or after the bad step
  _assert_same_state(_state(straight_runs["gpt_tiny"], 4), _state(workdir, 4))


def test_skip_nonfinite_counts_the_skipped_step_and_finishes(text_dir, data_dir, tmp_path):
  config = _config(text_dir, data_dir, "gpt_tiny")
  config.train.inject_nan_at_step, config.train.skip_nonfinite = 5, True
  workdir = str(tmp_path / "skip")
  summary = trainer.train(config, workdir)
  assert summary["step"] == STEPS and np.isfinite(summary["final_loss"])
  skipped = {r["step"]: r["nonfinite_steps"] for r in _train_records(workdir)}
  assert skipped[5] == 1 and sum(skipped.values()) == 1


def test_eval_mode_scores_the_latest_checkpoint_and_changes_nothing(text_dir, data_dir,
                                                                   straight_runs):
  config = _config(text_dir, data_dir, "gpt_tiny")
  workdir = straight_runs["gpt_tiny"]
  snapshot = {p: os.path.getmtime(p) for p in glob.glob(os.path.join(workdir, "**", "*"),
                                                        recursive=True)}
  command = [sys.executable, "-m", "train.main", *command_line("gpt_tiny", config, workdir),
             "--mode=eval"]
  result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-3000:]
  scores = json.loads(result.stdout)
  summary = json.load(open(os.path.join(workdir, "summary.json")))
  assert scores["step"] == STEPS
  assert scores["loss"] == pytest.approx(summary["final_loss"], rel=1e-6)
  assert {p: os.path.getmtime(p) for p in snapshot} == snapshot


@pytest.mark.slow
def test_resume_on_a_different_mesh(text_dir, data_dir, tmp_path, straight_runs):
  """Half the run on 1 device, the rest on 2 (data parallel): the same model, to fp32
  rounding (the gradient's all-reduce sums in another order)."""
  config = _config(text_dir, data_dir, "gpt_tiny")
  workdir = str(tmp_path / "remeshed")
  shutil.copytree(straight_runs["gpt_tiny"], workdir)  # the same run, trained once
  for step in range(6, STEPS + 1, 2):  # as if it had stopped after step 4
    shutil.rmtree(os.path.join(workdir, "checkpoints", str(step)))
  config.mesh.data = 2
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  rerun = _start("gpt_tiny", config, workdir, env=env)
  _, err = rerun.communicate(timeout=600)
  assert rerun.returncode == 0, err[-3000:]
  a, b = _state(straight_runs["gpt_tiny"], STEPS), _state(workdir, STEPS)
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a["params"]),
                          jax.tree.leaves(b["params"])):
    name = jax.tree_util.keystr(path)
    if "key_bias" in name and config.model.position != "rotary":
      # Unrotated, its exact gradient is 0 (it shifts all of a query's logits alike), so
      # both runs hold only rounding noise there, which AdamW scales up: both must stay ~0.
      # (Rotary positions turn it by each key's position: then it learns like the rest.)
      assert np.abs(x).max() < 1e-5 and np.abs(y).max() < 1e-5, name
      continue
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6, err_msg=name)
