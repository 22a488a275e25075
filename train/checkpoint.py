"""Orbax checkpoints of the train state together with the data iterator's position."""
import os

import jax
import grain
import orbax.checkpoint as ocp


def directory(workdir: str) -> str:
  """Where a run's checkpoints live inside its workdir."""
  return os.path.join(workdir, "checkpoints")


class Checkpointer:
  """Async, keep-last-N checkpoints under `directory`: {'state', 'data_iter'} per step."""

  def __init__(self, directory: str, every: int, keep: int):
    options = ocp.CheckpointManagerOptions(save_interval_steps=every, max_to_keep=keep,
                                           enable_async_checkpointing=True, create=True)
    self.manager = ocp.CheckpointManager(
        directory, options=options, item_names=("state", "data_iter"),
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "data_iter": grain.checkpoint.CheckpointHandler()})

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, data_iter, *, force: bool = False) -> bool:
    """Saves if `step` is on the interval (or `force`); returns whether it saved."""
    return self.manager.save(step, force=force, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data_iter=grain.checkpoint.CheckpointSave(data_iter)))

  def restore(self, step: int, abstract_state, shardings, data_iter=None):
    """The state at `step`, laid out by `shardings`; a given `data_iter` moves to where it was."""
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract_state, shardings)
    items = {"state": ocp.args.StandardRestore(target)}
    if data_iter is not None:  # without one (inference), the data position is not read
      items["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
    return self.manager.restore(step, args=ocp.args.Composite(**items))["state"]

  def close(self) -> None:
    """Waits for pending async saves, then releases the manager."""
    self.manager.wait_until_finished()
    self.manager.close()
