"""Which parameters train: regexes over parameter paths (config.train.trainable / frozen).

A parameter trains if some `trainable` pattern is found in its path (every one does
when there are none) and no `frozen` pattern is. The optimizer (train/optim.py) gives
frozen parameters optax's `set_to_zero` through `optax.multi_transform`, so they keep
no optimizer state and their updates are exactly zero.
"""
import re

import jax
import optax

from train import init_from

TRAIN, FROZEN = "train", "frozen"


def patterns(field: str, value: str) -> tuple:
  """The compiled comma-separated regexes of config field `field`."""
  compiled = []
  for text in filter(None, (p.strip() for p in value.split(","))):
    try:
      compiled.append(re.compile(text))
    except re.error as e:
      raise ValueError(f"config.{field}: {text!r} is not a regex ({e})") from None
  return tuple(compiled)


class Trainable:
  """The trainable/frozen split of a model's parameters, from `config.train`."""

  def __init__(self, trainable: str = "", frozen: str = ""):
    self.trainable = patterns("train.trainable", trainable)
    self.frozen = patterns("train.frozen", frozen)

  @property
  def everything(self) -> bool:
    return not self.trainable and not self.frozen

  def trains(self, path: str) -> bool:
    return ((not self.trainable or any(p.search(path) for p in self.trainable))
            and not any(p.search(path) for p in self.frozen))

  def labels(self, params):
    """TRAIN or FROZEN at each leaf of `params` (for optax.multi_transform)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: TRAIN if self.trains(init_from.path_key(path)) else FROZEN, params)

  def masked(self, tree):
    """`tree` (shaped like the params) with optax's MaskedNode at the frozen leaves: the
    shape of the params inside the optimizer's state."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: x if self.trains(init_from.path_key(path)) else optax.MaskedNode(), tree)

  def check(self, params) -> None:
    """Raises a one-line ValueError for a pattern that matches no parameter, or a split
    that leaves nothing to train."""
    paths = [init_from.path_key(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    for field, compiled in (("trainable", self.trainable), ("frozen", self.frozen)):
      for pattern in compiled:
        if not any(pattern.search(p) for p in paths):
          raise ValueError(f"config.train.{field}: {pattern.pattern!r} matches no parameter; "
                           f"parameter paths look like {paths[0]!r}")
    if not any(self.trains(p) for p in paths):
      raise ValueError("config.train.trainable/frozen leave no parameter to train")
