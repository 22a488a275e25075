"""The real `python -m train.main` on two hosts trains like one, and its checkpoints move.

Two processes with 2 CPU devices each (gloo collectives, coordinator on
localhost) against one process with 4; then one process on another mesh
resumes the two-process run's checkpoint and goes on with the same losses.
"""
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from tests.conftest import command_line, tiny_config
from train import checkpoint, trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS, SAVED = 6, 3
# fp32 throughout, the same batches (data.shard_by=rows) and the same 4 batch
# shards; what differs is only the order of the fp32 additions in the gradient's
# all-reduce (gloo between processes, XLA within one) and, on the resumed mesh,
# how fsdp and tensor split the matmuls. AdamW's early updates (about the sign
# of the gradient) carry that rounding into later losses: observed differences
# are at most 8e-8 relative (a few float32 ulps); 1e-5 leaves room for other
# CPUs' kernels, while a batch out of place moves the loss far more (step 1's
# train batch and step 0's validation batches, same params: 1e-3 apart).
RTOL = 1e-5
TIMEOUT = 300  # seconds per run: minutes of margin on a loaded 2-core machine


def _config(text_dir, data_dir):
  c = tiny_config(text_dir, data_dir)
  c.data.shard_by = "rows"  # the batches do not depend on the host count
  c.train.num_steps, c.train.log_every = STEPS, 1
  c.train.checkpoint_every, c.train.keep_checkpoints = SAVED, 10
  c.train.eval_every = 100
  c.sample.num_prompts, c.sample.temperature = 1, 0.0  # greedy, on params from both hosts
  return c


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start(config, workdir, devices, *extra):
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  return subprocess.Popen([sys.executable, "-m", "train.main",
                           *command_line("gpt_tiny", config, workdir), *extra],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


def _finish(processes) -> list[str]:
  """Waits for all `processes` and returns their stderr; on any failure, shows every one's."""
  outputs = []
  deadline = time.time() + TIMEOUT
  for p in processes:
    try:
      outputs.append(p.communicate(timeout=max(1, deadline - time.time())))
    except subprocess.TimeoutExpired:
      for q in processes:
        q.kill()
      outputs.append(p.communicate())
  failed = [i for i, p in enumerate(processes) if p.returncode != 0]
  if failed:
    report = "\n".join(f"--- process {i} (exit {p.returncode}) stderr:\n{err[-4000:]}"
                       for i, (p, (_, err)) in enumerate(zip(processes, outputs)))
    pytest.fail(f"processes {failed} failed:\n{report}")
  return [err for _, err in outputs]


def _train_records(workdir) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r["split"] == "train"]


def _train_losses(workdir) -> dict:
  return {r["step"]: r["loss"] for r in _train_records(workdir)}


@pytest.mark.slow
def test_two_hosts_train_like_one_and_their_checkpoint_resumes_on_another_mesh(
    built, text_dir, data_dir, tmp_path):
  del built  # built first: the hosts below only read the corpus and tokenizer
  config = _config(text_dir, data_dir)
  one, two = str(tmp_path / "one_host"), str(tmp_path / "two_hosts")
  port = _free_port()
  started = time.time()
  _finish([_start(config, one, 4)] + [
      _start(config, two, 2, f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
             f"--process_id={i}") for i in range(2)])
  print(f"one host x 4 devices and two hosts x 2 devices: {time.time() - started:.1f} s")
  reference, losses = _train_losses(one), _train_losses(two)
  assert sorted(reference) == sorted(losses) == list(range(1, STEPS + 1))
  assert reference[STEPS] < reference[1]  # the steps really trained the model
  np.testing.assert_allclose([losses[s] for s in sorted(losses)],
                             [reference[s] for s in sorted(reference)], rtol=RTOL)
  # Process 0 wrote the summary, with a continuation sampled greedily from the params
  # gathered from both hosts: the same text as one host's.
  summaries = [json.load(open(os.path.join(w, "summary.json"))) for w in (one, two)]
  assert len(summaries[1]["samples"]) == 1
  assert summaries[1]["samples"] == summaries[0]["samples"]
  # Scores of the whole validation split, not process 0's rows only. The unigram's sums
  # cross hosts as float32 (JAX without x64): 1e-6 relative, where one host's half of the
  # rows alone would score other text.
  assert summaries[1]["eval_tokens"] == summaries[0]["eval_tokens"]
  assert summaries[1]["unigram_bits_per_byte"] == pytest.approx(
      summaries[0]["unigram_bits_per_byte"], rel=1e-6)

  # One host, a mesh of fsdp x tensor, resumes the two-host run from step SAVED.
  resumed = str(tmp_path / "resumed")
  shutil.copytree(two, resumed)
  for name in os.listdir(os.path.join(resumed, "checkpoints")):
    if name.isdigit() and int(name) > SAVED:
      shutil.rmtree(os.path.join(resumed, "checkpoints", name))
  metrics = os.path.join(resumed, "metrics.jsonl")
  with open(metrics) as f:  # so every later record comes from the resumed run
    kept = [line for line in f if json.loads(line)["step"] <= SAVED]
  with open(metrics, "w") as f:
    f.writelines(kept)
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 1, 2, 2
  started = time.time()
  (log,) = _finish([_start(config, resumed, 4)])
  print(f"one host x 4 devices (fsdp 2 x tensor 2), resumed: {time.time() - started:.1f} s")
  assert f"Resuming from the checkpoint at step {SAVED}." in log
  assert "was written by 2 hosts" in log
  assert not os.path.exists(os.path.join(resumed, "checkpoints_unreadable"))
  new = _train_records(resumed)[SAVED:]
  assert [r["step"] for r in new] == list(range(SAVED + 1, STEPS + 1))  # none trained twice
  after = {r["step"]: r["loss"] for r in new}
  np.testing.assert_allclose([after[s] for s in sorted(after)],
                             [reference[s] for s in sorted(after)], rtol=RTOL)
  for s in sorted(reference):
    print(f"step {s}: one host {reference[s]:.7f}, two hosts {losses[s]:.7f}"
          + (f", resumed {after[s]:.7f}" if s in after else ""))
  worst = lambda other: max(abs(other[s] / reference[s] - 1) for s in other)
  print(f"largest relative difference: two hosts {worst(losses):.1e}, resumed {worst(after):.1e}")


@pytest.mark.slow
def test_two_hosts_sharding_documents_evaluate_the_whole_split(built, text_dir, data_dir,
                                                              tmp_path):
  """Hosts that train on their own documents still evaluate every row together (a host
  with more eval batches than the other would wait in an all-reduce forever): the same
  tokens and loss as one host scoring the checkpoint they wrote."""
  del built
  config = _config(text_dir, data_dir)
  config.data.shard_by = "documents"
  config.train.num_steps = 2
  workdir, port = str(tmp_path / "two_hosts"), _free_port()
  _finish([_start(config, workdir, 2, f"--coordinator_address=127.0.0.1:{port}",
                  "--num_processes=2", f"--process_id={i}") for i in range(2)])
  summary = json.load(open(os.path.join(workdir, "summary.json")))
  scores = trainer.evaluate_workdir(config, workdir)  # this process: one host, one device
  assert summary["step"] == scores["step"] == 2
  assert summary["eval_tokens"] == scores["eval_tokens"]
  assert summary["final_loss"] == pytest.approx(scores["loss"], rel=RTOL)


def _as_if_written_by_two_hosts(workdir, step):
  """Renames the data position files of a one-host checkpoint as two hosts name theirs."""
  where = os.path.join(workdir, "checkpoints", str(step), "data_iter")
  (only,) = glob.glob(os.path.join(where, "process_*.json"))
  for i in range(2):
    shutil.copy(only, os.path.join(where, f"process_{i}-of-2.json"))
  os.remove(only)


@pytest.mark.parametrize("shard_by", ["rows", "documents"])
def test_data_position_moves_to_another_host_count_only_when_sharded_by_rows(tmp_path,
                                                                            shard_by):
  workdir = str(tmp_path)
  state = {"w": jnp.arange(4.0)}
  data = iter(grain.MapDataset.range(100).to_iter_dataset())
  for _ in range(5):
    next(data)
  saver = checkpoint.Checkpointer(workdir, every=1, keep=3, shard_by=shard_by)
  saver.save(1, state, data, ml_collections.ConfigDict({"seed": 0}))
  saver.close()
  _as_if_written_by_two_hosts(workdir, 1)
  abstract = jax.eval_shape(lambda: state)
  shardings = jax.tree.map(lambda x: x.sharding, state)
  resumed = iter(grain.MapDataset.range(100).to_iter_dataset())
  loader = checkpoint.Checkpointer(workdir, every=1, keep=3, shard_by=shard_by)
  if shard_by == "rows":
    step, restored = loader.restore_latest_readable(abstract, shardings, resumed)
    assert step == 1 and next(resumed) == 5
    np.testing.assert_array_equal(restored["w"], state["w"])
  else:
    with pytest.raises(checkpoint.HostCountError,
                       match=r"written by 2 hosts .* continues only on 2 hosts, not 1; resume "
                             r"it with --num_processes=2 .*--config.data.shard_by=rows"):
      loader.restore_latest_readable(abstract, shardings, resumed)
    assert not os.path.exists(os.path.join(workdir, "checkpoints_unreadable"))
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "1"))
  loader.close()
