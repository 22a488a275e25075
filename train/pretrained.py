"""Model weights on disk without a train state: pretrained or converted checkpoints.

A pretrained directory holds `config.json` (the full experiment config, as a
workdir's) and `params/` (an orbax tree of the model's parameters, named as
`nnx.to_pure_dict(nnx.state(model, nnx.Param))`). tools/convert_hf.py writes
and reads them; tools/generate.py generates from them. `load_params` also reads a
training workdir (its latest checkpoint's parameters), so a run exports as it is.
"""
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp
from flax import nnx

from model import abstract_model, model_config
from train import init_from


def save_params(directory: str, config: ml_collections.ConfigDict, params) -> None:
  """Writes `config.json` and `params/` under `directory`; fails if params/ exists."""
  model_config(config)  # refuse to write weights no config can build
  directory = os.path.abspath(directory)
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as f:
    json.dump(json.loads(config.to_json()), f, indent=2, sort_keys=True)
  checkpointer = ocp.StandardCheckpointer()
  # As jax arrays, so that they restore as jax arrays.
  checkpointer.save(os.path.join(directory, "params"), jax.tree.map(jnp.asarray, params))
  checkpointer.wait_until_finished()


def load_config(directory: str) -> ml_collections.ConfigDict:
  path = os.path.join(directory, "config.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found; is {directory} a pretrained directory?")
  with open(path, encoding="utf-8") as f:
    return ml_collections.ConfigDict(json.load(f))


def load_params(directory: str, shardings=None) -> tuple[ml_collections.ConfigDict, dict]:
  """(config, params) saved by `save_params`, or of a workdir's latest checkpoint; params
  laid out by `shardings` if given.

  The tree to restore into is the one the config builds, so a config that no
  longer matches the saved arrays fails here rather than in the first step.
  """
  config = load_config(directory)
  cfg = model_config(config)
  abstract = nnx.to_pure_dict(nnx.state(abstract_model(cfg), nnx.Param))
  if shardings is None:
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    shardings = jax.tree.map(lambda _: device, abstract)
  target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract, shardings)
  path = os.path.join(os.path.abspath(directory), "params")
  if os.path.isdir(path):
    return config, ocp.StandardCheckpointer().restore(path, target)
  # A training workdir: the parameters of its latest finished checkpoint.
  state = init_from.latest_state(directory)
  if state is None:
    raise ValueError(f"{directory} holds neither params/ (a pretrained or converted model) nor "
                     "a finished checkpoint (a workdir)")
  return config, init_from.restore_part(state, ("params",), target)
