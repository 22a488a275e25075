"""Checks of a config and a workdir that run before any data is built or code compiled."""
import json
import math
import os

import jax
import ml_collections

from model import model_config
from train import objectives

# Fields that may differ when a workdir is resumed: they change where or how
# often things are written, not what is computed.
RESUMABLE_CHANGES = {"data.data_dir", "data.num_threads", "train.log_every",
                     # A run may resume on another mesh: tests/test_sharding.py shows the
                     # numbers do not depend on the layout.
                     "mesh.data", "mesh.fsdp", "mesh.tensor"}


def validate(config: ml_collections.ConfigDict, batch_divisor: int) -> None:
  """Raises ValueError naming the field and the fix for a config that cannot run."""
  model_config(config)
  family, objective = config.model.family, config.objective
  if objective not in objectives.FAMILY_OBJECTIVES.get(family, ()):
    raise ValueError(f"config.objective={objective!r} does not fit config.model.family="
                     f"{family!r}; choose one of {objectives.FAMILY_OBJECTIVES.get(family, ())}")
  t = config.train
  for name in ("batch_size", "num_steps", "log_every", "eval_every", "checkpoint_every",
               "keep_checkpoints"):
    if t[name] < 1:
      raise ValueError(f"config.train.{name}={t[name]} must be a positive integer")
  if config.data.shard_by not in ("documents", "rows"):
    raise ValueError(f"config.data.shard_by={config.data.shard_by!r} is not 'documents' or "
                     "'rows'")
  if config.data.seq_len < 4:
    raise ValueError(f"config.data.seq_len={config.data.seq_len} must be at least 4")
  n = config.noise
  for name in ("mlm_rate", "noise_density"):
    if not 0.0 < n[name] < 1.0:
      raise ValueError(f"config.noise.{name}={n[name]} must be in (0, 1)")
  if n.mean_span_length < 1.0:
    raise ValueError(f"config.noise.mean_span_length={n.mean_span_length} must be >= 1")
  shards = math.lcm(batch_divisor, jax.process_count())
  if t.batch_size % shards:
    raise ValueError(f"config.train.batch_size={t.batch_size} does not divide into the {shards} "
                     "batch shards of the mesh and hosts; use a multiple of it")
  if t.microbatches < 1 or t.batch_size % (shards * t.microbatches):
    raise ValueError(f"config.train.microbatches={t.microbatches} must divide each of the "
                     f"{shards} batch shards of config.train.batch_size={t.batch_size}; use a "
                     f"divisor of {t.batch_size // shards}")
  scored = objectives.scored_length(config)
  if t.loss_chunk < 0 or (t.loss_chunk and scored % t.loss_chunk):
    raise ValueError(f"config.train.loss_chunk={t.loss_chunk} must divide the {scored} positions "
                     f"per row that the loss scores; use a divisor of {scored}, or 0 for all")
  s = config.sample
  if family == "decoder" and s.prompt_tokens + s.new_tokens > config.model.max_length:
    raise ValueError(f"config.sample.prompt_tokens + new_tokens = "
                     f"{s.prompt_tokens + s.new_tokens} exceeds config.model.max_length="
                     f"{config.model.max_length}; shorten them")


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
  changed = sorted(k for k in saved.keys() | now.keys()
                   if k not in RESUMABLE_CHANGES and saved.get(k) != now.get(k))
  if changed:
    diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed[:4])
    raise ValueError(f"workdir {workdir} was made by a different config ({diffs}"
                     f"{', ...' if len(changed) > 4 else ''}); pass the same flags to resume it, "
                     "or use a new --workdir")
