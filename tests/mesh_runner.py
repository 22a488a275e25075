"""Runs a few train steps of a tiny model on simulated CPU devices and prints JSON results.

Run as a subprocess by tests/test_sharding.py, because the device count (and
jax.distributed) must be set before JAX starts:

  python -m tests.mesh_runner --families encoder decoder --devices=8 --meshes 8,1,1 2,2,2
  python -m tests.mesh_runner --families decoder --devices=2 --meshes 2,1,1 \
      --microbatches 1 4
  python -m tests.mesh_runner --families decoder --devices=2 --meshes 4,1,1 \
      --num_processes=2 --process_id=0 --port=12345    # one of two hosts

It prints `RESULTS {family: {microbatches: {mesh: ...}}}` as JSON: every combination runs
in this one process, so JAX starts once for all of them.
"""
import argparse
import json
import os


def _args():
  parser = argparse.ArgumentParser()
  parser.add_argument("--families", nargs="+", required=True)
  parser.add_argument("--devices", type=int, required=True, help="CPU devices per process")
  parser.add_argument("--meshes", nargs="+", required=True, help="data,fsdp,tensor sizes")
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--microbatches", type=int, nargs="+", default=[1])
  parser.add_argument("--num_processes", type=int, default=1)
  parser.add_argument("--process_id", type=int, default=0)
  parser.add_argument("--port", type=int, default=0)
  return parser.parse_args()


ARGS = _args()
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={ARGS.devices}"

import jax  # noqa: E402  (after XLA_FLAGS)
import numpy as np  # noqa: E402

from configs import common  # noqa: E402
from train import noise, objectives, sharding  # noqa: E402
from train.experiment import Experiment  # noqa: E402

BATCH = 8


def tiny_config(family: str, mesh: tuple[int, int, int], microbatches: int):
  """Every sharded dimension divides by 8, so any layout of 8 devices fits."""
  c = common.base_config()
  c.model.family, c.objective = family, objectives.fitting(family)[0]
  c.model.num_layers, c.model.embed_dim, c.model.num_heads, c.model.head_dim = 2, 32, 8, 4
  c.model.mlp_dim, c.model.max_length = 64, 32
  if family == "encoder_decoder":
    c.model.position = "relative"
  c.data.vocab_size, c.data.seq_len = 256, 32
  c.train.batch_size, c.train.microbatches = BATCH, microbatches
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = mesh
  # Large early updates, so three steps move the parameters far enough to tell layouts apart.
  c.optim.learning_rate, c.optim.warmup_steps = 1e-2, 1
  c.sample.num_prompts = 0  # it only steps
  return c


def fixed_batch(config) -> dict:
  """BATCH examples of the config's objective over fixed random rows of two documents."""
  objective = objectives.make(config)
  rng = np.random.default_rng(0)
  length = objective.raw_length
  examples = []
  for i in range(BATCH):
    tokens = rng.integers(*objectives.specials_of(config, None).text_ids, length)
    cut = length // 3 + i
    segments = np.where(np.arange(length) < cut, 1, 2)
    positions = np.where(segments == 1, np.arange(length), np.arange(length) - cut)
    row = {"targets": tokens.astype(np.int32), "targets_segment_ids": segments.astype(np.int32),
           "targets_positions": positions.astype(np.int32)}
    example = objective(row, noise.example_rng(0, i))
    example["target_bytes"] = (example["weights"] > 0).astype(np.int32)
    examples.append(example)
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def run(family: str, mesh_sizes: tuple[int, int, int], microbatches: int) -> dict:
  experiment = Experiment(tiny_config(family, mesh_sizes, microbatches))
  config, batch_sharding = experiment.config, experiment.batch_sharding
  state = experiment.create_state()
  step = experiment.jit_train_step()
  full = fixed_batch(config)
  # This host's rows: with the batch over (data, fsdp), host p holds the p-th block.
  rows = BATCH // jax.process_count()
  local = {k: v[jax.process_index() * rows:(jax.process_index() + 1) * rows]
           for k, v in full.items()}
  losses, grad_norms = [], []
  for _ in range(ARGS.steps):
    state, metrics = step(state, sharding.to_global(local, batch_sharding))
    losses.append(float(metrics["loss"]))
    grad_norms.append(float(metrics["grad_norm"]))
  flat = jax.tree_util.tree_flatten_with_path(state.params)[0]
  shards = {jax.tree_util.keystr(path): [list(x.shape), list(x.addressable_shards[0].data.shape)]
            for path, x in flat}
  specs = {jax.tree_util.keystr(path): str(x.sharding.spec) for path, x in flat}
  return {"loss": losses, "grad_norm": grad_norms, "shard_shapes": shards, "specs": specs}


def main():
  if ARGS.num_processes > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{ARGS.port}",
                               num_processes=ARGS.num_processes, process_id=ARGS.process_id)
  results = {family: {str(n): {m: run(family, tuple(int(s) for s in m.split(",")), n)
                               for m in ARGS.meshes}
                      for n in ARGS.microbatches}
             for family in ARGS.families}
  if jax.process_index() == 0:
    print("RESULTS " + json.dumps(results))


if __name__ == "__main__":
  main()
