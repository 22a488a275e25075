"""Checks of a config and a workdir that run before any data is built or code compiled."""
import json
import math
import os

import jax
import ml_collections

from configs import common, fields
from model import model_config
from model.config import REMOVED
from train import objectives

# Fields that may differ when a workdir is resumed: they change where or how
# often things are written, not what is computed.
RESUMABLE_CHANGES = {"data.data_dir", "data.num_threads", "train.log_every",
                     # A run may resume on another mesh: tests/test_sharding.py shows the
                     # numbers do not depend on the layout.
                     "mesh.data", "mesh.fsdp", "mesh.tensor",
                     # The rules lay the same numbers out, as the mesh does.
                     "sharding.rules"}


def check_fields(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the field, its value and the values it admits, for the first
  numeric field outside the range configs/common.py declares for it. Reads nothing else."""
  fields.check(config, common.numeric_fields())


def validate(config: ml_collections.ConfigDict, batch_divisor: int) -> None:
  """Raises ValueError naming the field and the fix for a config, its fields already in
  their ranges (check_fields), whose fields do not fit each other or the mesh (the task
  checks its own fields: train/tasks.py)."""
  model_config(config)
  objectives.make(config)  # an unknown objective, or one the family cannot train
  t, o = config.train, config.optim
  if o.warmup_steps > t.num_steps:
    raise ValueError(f"config.optim.warmup_steps={o.warmup_steps} exceeds config.train.num_steps="
                     f"{t.num_steps}: the learning rate would never reach its peak; use at most "
                     f"{t.num_steps}")
  if t.inject_nan_at_step > t.num_steps:
    raise ValueError(f"config.train.inject_nan_at_step={t.inject_nan_at_step} is after the last "
                     f"step, config.train.num_steps={t.num_steps}; use -1 or a step up to it")
  if t.keep_checkpoints_every % t.checkpoint_every:
    raise ValueError(f"config.train.keep_checkpoints_every={t.keep_checkpoints_every} is not a "
                     f"multiple of config.train.checkpoint_every={t.checkpoint_every}, so no "
                     "checkpoint would be kept by it; use a multiple, or 0")
  if "://" in config.data.data_dir:
    raise ValueError(f"config.data.data_dir={config.data.data_dir!r}: a URL cannot hold the built "
                     "corpora and tokenizers yet (they are written with local file calls); give a "
                     "local directory, or a mount all hosts share (docs/tpu_vm.md)")
  if config.data.shard_by not in ("documents", "rows"):
    raise ValueError(f"config.data.shard_by={config.data.shard_by!r} is not 'documents' or "
                     "'rows'")
  shards = math.lcm(batch_divisor, jax.process_count())
  if t.batch_size % shards:
    raise ValueError(f"config.train.batch_size={t.batch_size} does not divide into the {shards} "
                     "batch shards of the mesh and hosts; use a multiple of it")
  if t.batch_size % (shards * t.microbatches):
    raise ValueError(f"config.train.microbatches={t.microbatches} must divide each of the "
                     f"{shards} batch shards of config.train.batch_size={t.batch_size}; use a "
                     f"divisor of {t.batch_size // shards}")


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
  return out


def check_workdir_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Writes workdir/config.json on the first run; on later runs, fails if the config changed.

  Every host of a multi-host run may write it at once: each writes its own temporary file
  and renames it, so no host ever reads a half-written one.
  """
  path = os.path.join(workdir, "config.json")
  current = json.loads(config.to_json())
  if not os.path.exists(path):
    os.makedirs(workdir, exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}.{jax.process_index()}"
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump(current, f, indent=2, sort_keys=True)
    os.replace(tmp, path)
    return
  with open(path, encoding="utf-8") as f:
    saved = _flatten(json.load(f))
  now = _flatten(current)
  # A field added to the project after the run started is unchanged if it holds the
  # default: the code before it behaved as the default does.
  defaults = _flatten(json.loads(common.base_config().to_json()))
  saved.update({k: defaults[k] for k in now.keys() - saved.keys() if k in defaults})
  # A field the project removed is unchanged if it held what the code does now.
  for field, value in REMOVED.items():
    if saved.get(f"model.{field}") == value:
      del saved[f"model.{field}"]
  changed = sorted(k for k in saved.keys() | now.keys()
                   if k not in RESUMABLE_CHANGES and saved.get(k) != now.get(k))
  if changed:
    diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed[:4])
    raise ValueError(f"workdir {workdir} was made by a different config ({diffs}"
                     f"{', ...' if len(changed) > 4 else ''}); pass the same flags to resume it, "
                     "or use a new --workdir")
