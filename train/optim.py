"""AdamW with linear warmup, cosine decay and global-norm clipping, on the trainable
parameters only (train/trainable.py)."""
import jax
import ml_collections
import optax

from train import trainable as trainable_lib


def learning_rate_schedule(optim: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=optim.learning_rate, warmup_steps=optim.warmup_steps,
      decay_steps=max(num_steps, optim.warmup_steps + 1),
      end_value=optim.learning_rate * optim.final_lr_ratio)


def make_optimizer(optim: ml_collections.ConfigDict, num_steps: int,
                   trainable: trainable_lib.Trainable | None = None) -> optax.GradientTransformation:
  """Weight decay applies to matrices only, not to norms' scales or biases.

  With a `trainable` split, frozen parameters get zero updates and no state, and the
  gradient is clipped by the trainable parameters' norm alone.
  """
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
  adamw = optax.chain(
      optax.clip_by_global_norm(optim.clip_norm),
      optax.adamw(learning_rate_schedule(optim, num_steps), b1=optim.b1, b2=optim.b2,
                  eps=optim.eps, weight_decay=optim.weight_decay, mask=decay_mask))
  if trainable is None or trainable.everything:
    return adamw  # the same state tree as before the split existed: old workdirs resume
  return optax.multi_transform({trainable_lib.TRAIN: adamw,
                                trainable_lib.FROZEN: optax.set_to_zero()}, trainable.labels)
