"""Step sums added over an interval, and metrics written to metrics.jsonl and TensorBoard by
the first host (what the metrics are is the task's: train/tasks.py)."""
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np


def _first_nonzero(a, b):
  return jnp.where(a == 0, b, a)


def add_sums(a: dict | None, b: dict) -> dict:
  """Adds step metrics to an interval's; `*_step` fields keep the first nonzero step."""
  if a is None:
    return dict(b)
  return {k: _first_nonzero(a[k], b[k]) if k.endswith("_step") else a[k] + b[k] for k in a}


class MetricsWriter:
  """Appends one self-describing JSON record per (step, split) to workdir/metrics.jsonl."""

  def __init__(self, workdir: str, objective: str):
    self.enabled = jax.process_index() == 0
    self.objective = objective
    self.start = time.time()
    if self.enabled:
      # Imported here: tensorboardX imports torch whenever it is installed (seconds), which
      # commands that write no metrics (a run stopped by a bad flag, --mode=eval) skip.
      from tensorboardX import SummaryWriter
      self.jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")
      self.tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, split: str, values: dict, **context) -> None:
    if not self.enabled:
      return
    values = {k: float(np.asarray(v)) for k, v in values.items()}
    record = {"step": int(step), "split": split, "objective": self.objective,
              "wall_time": time.time() - self.start, **context, **values}
    self.jsonl.write(json.dumps(record) + "\n")
    self.jsonl.flush()
    for name, value in values.items():
      self.tensorboard.add_scalar(f"{split}/{name}", value, int(step))

  def close(self) -> None:
    if self.enabled:
      self.jsonl.close()
      self.tensorboard.close()
