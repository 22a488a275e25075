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
    target = _prune(target)
    for key in reversed(self.under):
      target = {key: target}
    restored = ocp.Checkpointer(ocp.PyTreeCheckpointHandler()).restore(
        self.path, args=ocp.args.PyTreeRestore(
            item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
            partial_restore=True))
    for key in self.under:
      restored = restored[key]
    restored = param_paths(restored)
    return jax.tree_util.tree_map_with_path(
        lambda path, p: restored.get(path_key(path), p),
        params)

  def log(self) -> None:
    logging.info("init_from %s: loaded %d parameters; newly initialised: %s; left out: %s.",
                 self.path, len(self.loaded), ", ".join(self.new) or "none",
                 ", ".join(self.left_out) or "none")


def _prune(tree):
  """The nested dict without its None leaves and the dicts they leave empty."""
  if not isinstance(tree, dict):
    return tree
  pruned = {k: _prune(v) for k, v in tree.items() if v is not None}
  return {k: v for k, v in pruned.items() if not (isinstance(v, dict) and not v)}
