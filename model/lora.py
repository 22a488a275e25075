"""LoRA: a trainable low-rank update beside a frozen kernel (Hu et al. 2021).

A kernel W [*in, *out] named in `config.model.lora_targets` (query, key, value, out of
attention; wi, wi_linear, wo of the MLP) gains A [*in, R] and B [R, *out]; its output
becomes x W + (alpha / R) dropout(x) A B. B starts at zero, so a model with fresh
adapters computes what its base does. A and B carry the kernel's logical axes on the
dimensions they share with it (the rank is replicated), so they shard like it.
"""
import jax
import jax.numpy as jnp
from flax import nnx

from model import layers  # as a module: layers imports this one too

# Kernels LoRA may adapt: the attention projections and the MLP's.
TARGETS = ("query", "key", "value", "out", "wi", "wi_linear", "wo")


def targets(cfg) -> tuple:
  """The kernel names `cfg` adapts (none when lora_rank is 0)."""
  if not cfg.lora_rank:
    return ()
  return tuple(t.strip() for t in cfg.lora_targets.split(",") if t.strip())


class Lora(nnx.Module):
  """The update of one kernel of shape in_shape + out_shape."""

  def __init__(self, in_shape: tuple, out_shape: tuple, in_axes: tuple, out_axes: tuple, cfg, *,
               rngs: nnx.Rngs):
    param_dtype = jnp.dtype(cfg.param_dtype)
    self.dtype, self.num_in = jnp.dtype(cfg.dtype), len(in_shape)
    fan_in = 1
    for n in in_shape:
      fan_in *= n
    self.a = layers.param(rngs, nnx.initializers.normal(fan_in ** -0.5), (*in_shape, cfg.lora_rank),
                   (*in_axes, None), param_dtype)
    self.b = layers.param(rngs, nnx.initializers.zeros, (cfg.lora_rank, *out_shape), (None, *out_axes),
                   param_dtype)
    self.scale = cfg.lora_alpha / cfg.lora_rank
    self.dropout = nnx.Dropout(cfg.lora_dropout)

  def __call__(self, x: jax.Array, rngs: nnx.Rngs | None = None) -> jax.Array:
    x = self.dropout(x, rngs=rngs, deterministic=rngs is None)
    # [..., *in] -> [..., R]
    h = jnp.tensordot(x, self.a[...].astype(self.dtype), axes=self.num_in)
    # [..., R] -> [..., *out]
    return jnp.tensordot(h, self.b[...].astype(self.dtype), axes=1) * self.scale

  @staticmethod
  def delta(a: jax.Array, b: jax.Array, scale: float) -> jax.Array:
    """The kernel-shaped update [*in, *out] that merging adds to the base kernel."""
    return scale * jnp.tensordot(a, b, axes=1)


def maybe(name: str, in_shape, out_shape, in_axes, out_axes, cfg, rngs) -> Lora | None:
  """An adapter for kernel `name` if the config targets it."""
  if cfg is None or name not in targets(cfg):
    return None
  return Lora(tuple(in_shape), tuple(out_shape), tuple(in_axes), tuple(out_axes), cfg, rngs=rngs)


def apply(adapter: Lora | None, x: jax.Array, y: jax.Array, rngs=None) -> jax.Array:
  """y, the base kernel's output for x, plus the adapter's update if there is one."""
  return y if adapter is None else y + adapter(x, rngs)


def check_targets(cfg, param_paths) -> None:
  """Raises a one-line ValueError for a target kernel this model does not have (wi_linear
  without a gated MLP, for one)."""
  for name in targets(cfg):
    adapter = "/lora/a" if name in ("wi", "wi_linear", "wo") else f"/{name}_lora/a"
    if not any(p.endswith(adapter) and (adapter != "/lora/a" or f"/{name}/lora/" in p)
               for p in param_paths):
      raise ValueError(f"config.model.lora_targets: {name!r} matches no kernel of this model")


def merged(params: dict, scale: float) -> dict:
  """`params` without adapters, each adapted kernel plus its update: a model without LoRA
  computes what the adapted one does. Works on stacked (scanned) layers too."""
  out = {}
  for key, value in params.items():
    if key == "lora" or (isinstance(key, str) and key.endswith("_lora")):
      continue
    out[key] = merged(value, scale) if isinstance(value, dict) else value
  for key, value in params.items():
    if key == "lora" or (isinstance(key, str) and key.endswith("_lora")):
      base = "kernel" if key == "lora" else key[:-len("_lora")]
      a, b, kernel = value["a"], value["b"], out[base]
      delta = lambda a, b: Lora.delta(a, b, scale)
      if a.ndim + b.ndim - 2 != kernel.ndim:  # a leading layers axis on all three
        delta = jax.vmap(delta)
      out[base] = kernel + delta(a, b).astype(kernel.dtype)
  return out
