"""Starting a run from another run's parameters (`config.init_from`): fine-tuning.

`config.init_from` names a workdir of ours (its latest checkpoint's parameters) or a
pretrained directory (tools/convert_hf.py import, train/pretrained.py). Parameters
whose names and shapes match are restored straight onto the new run's shardings,
on any mesh (an orbax partial restore into a target tree: nothing is materialised
whole on one host); the new run's own parameters (a task head, LoRA adapters) keep
their fresh initialisation; saved parameters the new model lacks (an MLM head) are
left out. The optimizer state is never read: fine-tuning starts its own.
"""
import dataclasses
import os
import re

from absl import logging
import jax
import orbax.checkpoint as ocp

from train import checkpoint


def path_key(key_path) -> str:
  """A parameter's name from its jax key path: "stack/layers/0/mlp/wi/kernel"."""
  return jax.tree_util.keystr(key_path, simple=True, separator="/")


def param_paths(tree) -> dict:
  """{path_key: leaf} of a nested params dict."""
  return {path_key(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def latest_state(workdir: str) -> str | None:
  """The `state` item of the newest finished checkpoint in `workdir` (None if none)."""
  root = checkpoint.directory(workdir)
  steps = [int(d) for d in os.listdir(root) if d.isdigit()
           and os.path.isdir(os.path.join(root, d, "state"))] if os.path.isdir(root) else []
  return os.path.join(root, str(max(steps)), "state") if steps else None


@dataclasses.dataclass(frozen=True)
class InitFrom:
  """What `config.init_from` gives the new run: checked from the saved metadata alone."""
  path: str  # the orbax tree on disk
  under: tuple  # keys above the params in that tree: ("params",) in a train state
  loaded: tuple  # parameter paths restored from it
  new: tuple  # the new run's parameters it lacks: freshly initialised
  left_out: tuple  # its parameters the new run has no place for

  @classmethod
  def check(cls, init_from: str, abstract_params) -> "InitFrom":
    """Raises a one-line ValueError if `init_from` is missing, holds no parameters, or holds
    a parameter of the new model's name with another shape."""
    where = os.path.abspath(os.path.expanduser(init_from))
    if not os.path.isdir(where):
      raise ValueError(f"config.init_from={init_from!r} does not exist; give a workdir of a "
                       "finished run or a directory written by tools.convert_hf import")
    if os.path.isdir(os.path.join(where, "params")):
      path, under = os.path.join(where, "params"), ()
    else:
      path, under = latest_state(where), ("params",)
      if path is None:
        raise ValueError(f"config.init_from={init_from!r} holds neither params/ (a converted "
                         "model) nor a finished checkpoint (a workdir); train it first")
    saved = ocp.StandardCheckpointer().metadata(path).item_metadata.tree
    for key in under:
      saved = saved[key]
    saved, wanted = param_paths(saved), param_paths(abstract_params)
    for name in sorted(set(saved) & set(wanted)):
      if tuple(saved[name].shape) != tuple(wanted[name].shape):
        raise ValueError(f"config.init_from={init_from!r}: parameter {name} has shape "
                         f"{tuple(saved[name].shape)} there but {tuple(wanted[name].shape)} in "
                         "this model; make config.model match the model it was trained as")
    loaded = tuple(sorted(set(saved) & set(wanted)))
    _check_layer_layout(init_from, set(saved) - set(wanted), set(wanted) - set(saved))
    _check_positions(init_from, set(saved), set(wanted))
    if not loaded:
      raise ValueError(f"config.init_from={init_from!r} shares no parameter name with this "
                       "model; is it a run of the same family?")
    return cls(path, under, loaded, tuple(sorted(set(wanted) - set(saved))),
               tuple(sorted(set(saved) - set(wanted))))

  def restore(self, params, shardings):
    """`params` (the fresh ones) with every loaded parameter replaced by the saved one,
    read straight into its sharding from `shardings` (same tree)."""
    wanted = set(self.loaded)
    target = jax.tree_util.tree_map_with_path(
        lambda path, p, s: (jax.ShapeDtypeStruct(p.shape, p.dtype, sharding=s)
                            if path_key(path) in wanted
                            else None), params, shardings)
    restored = param_paths(restore_part(self.path, self.under, _prune(target)))
    return jax.tree_util.tree_map_with_path(
        lambda path, p: restored.get(path_key(path), p),
        params)

  def log(self) -> None:
    logging.info("init_from %s: loaded %d parameters; newly initialised: %s; left out: %s.",
                 self.path, len(self.loaded), ", ".join(self.new) or "none",
                 ", ".join(self.left_out) or "none")


def restore_part(path: str, under: tuple, target):
  """The part of the orbax tree at `path` that `target` (arrays' shapes, dtypes and
  shardings, nested under the keys `under`) names; the rest is not read."""
  for key in reversed(under):
    target = {key: target}
  restored = ocp.Checkpointer(ocp.PyTreeCheckpointHandler()).restore(
      path, args=ocp.args.PyTreeRestore(
          item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
          partial_restore=True))
  for key in under:
    restored = restored[key]
  return restored


def _check_layer_layout(init_from: str, left_out: set, new: set) -> None:
  """Raises a one-line ValueError if the saved layers are scanned (one stacked tree) and the
  new model's unrolled (layers/0/, layers/1/, ...), or the other way round: then no layer
  would load, only what lies outside the stacks."""
  in_layers = lambda names: {n for n in names if "/layers/" in f"/{n}"}
  unrolled = lambda names: any(re.search(r"(^|/)layers/\d+/", n) for n in names)
  saved_layers, new_layers = in_layers(left_out), in_layers(new)
  if not saved_layers or not new_layers or unrolled(saved_layers) == unrolled(new_layers):
    return
  saved_scanned = not unrolled(saved_layers)
  saved_as, this_model = (("stacked (scanned)", "unrolls") if saved_scanned
                          else ("one by one", "scans"))
  raise ValueError(
      f"config.init_from={init_from!r} holds its layers {saved_as} and this model {this_model} "
      f"them, so no layer would load; set --config.model.scan_layers={saved_scanned} (the same "
      f"model), or convert it {'without' if saved_scanned else 'with'} tools.convert_hf "
      "import's --scan_layers")


# How a model's parameter names show its position encoding (model/positions.py).
_POSITION_TABLES = {"positions/table": "a learned position table",
                    "relative_bias/table": "T5's relative position bias"}


def _position_kind(names: set) -> str:
  """What the parameter `names` say of the position encoding: one of _POSITION_TABLES'
  descriptions, or none (rotary, sinusoidal)."""
  kinds = {kind for suffix, kind in _POSITION_TABLES.items()
           if any(n == suffix or n.endswith("/" + suffix) for n in names)}
  return " and ".join(sorted(kinds)) or "no position parameters (rotary or sinusoidal)"


def _check_positions(init_from: str, saved: set, wanted: set) -> None:
  """Raises a one-line ValueError if the saved model encodes positions otherwise than the new
  one: every layer would load, yet read positions it was not trained with."""
  saved_kind, new_kind = _position_kind(saved), _position_kind(wanted)
  if saved_kind != new_kind:
    raise ValueError(f"config.init_from={init_from!r} encodes positions with {saved_kind} and "
                     f"this model with {new_kind}; set --config.model.position to the encoding "
                     "it was trained with")


def _prune(tree):
  """The nested dict without its None leaves and the dicts they leave empty."""
  if not isinstance(tree, dict):
    return tree
  pruned = {k: _prune(v) for k, v in tree.items() if v is not None}
  return {k: v for k, v in pruned.items() if not (isinstance(v, dict) and not v)}
