"""Building blocks shared by every family.

Einsum letters, used in shape comments and contractions across model/:
  B batch, T query length, S key length, D model width, N heads, K kv heads,
  G query heads per kv head, H head dim, F MLP width, V vocab, L layers,
  R relative-position buckets, Y token types.

Every parameter is created through `param`, which records its logical axis
names (one per dimension). train/sharding.py maps those names to mesh axes with
the rules in the config; model code never names a mesh axis.
"""
import contextlib
import contextvars
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import NamedSharding

from model import lora

Initializer = Callable[[jax.Array, Sequence[int], jnp.dtype], jax.Array]
INIT_STD = 0.02  # GPT-2 and BERT; model/init.py rescales it for other schemes
INIT = nnx.initializers.normal(INIT_STD)

# name -> (function, gated). Gated units multiply the activated projection by a
# second, linear one (GeGLU as in T5.1.1, SwiGLU as in LLaMA).
ACTIVATIONS = {
    "relu": (jax.nn.relu, False),
    "gelu": (lambda x: jax.nn.gelu(x, approximate=False), False),  # BERT: exact erf form
    "gelu_tanh": (lambda x: jax.nn.gelu(x, approximate=True), False),  # GPT-2
    "geglu": (lambda x: jax.nn.gelu(x, approximate=True), True),
    "swiglu": (jax.nn.silu, True),
}


# (mesh, logical-axis rules) while a step is traced by train/step.py; None: no constraints.
_ACTIVATION_SHARDING = contextvars.ContextVar("activation_sharding", default=None)
# Hidden states between blocks: rows over the batch's mesh axes, the rest whole.
# Without this, XLA may follow the weights' FSDP sharding of the model width and
# all-gather every activation over the global batch.
HIDDEN_AXES = ("batch", "length", None)


@contextlib.contextmanager
def activation_sharding(mesh, rules):
  """Within this context, `constrain` pins activations to `mesh` by the config's `rules`."""
  token = _ACTIVATION_SHARDING.set((mesh, tuple(rules)))
  try:
    yield
  finally:
    _ACTIVATION_SHARDING.reset(token)


def constrain(x: jax.Array, names: Sequence[str | None] = HIDDEN_AXES) -> jax.Array:
  """x laid out by its logical axis `names` under the active rules (unchanged if none)."""
  active = _ACTIVATION_SHARDING.get()
  if active is None:
    return x
  mesh, rules = active
  spec = nn.logical_to_mesh_axes(tuple(names), rules)
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def param(rngs: nnx.Rngs, init: Initializer, shape: Sequence[int], axes: Sequence[str],
          dtype: jnp.dtype) -> nnx.Param:
  """A parameter of `shape` annotated with one logical axis name per dimension."""
  if len(axes) != len(shape):
    raise ValueError(f"axes {tuple(axes)} do not match shape {tuple(shape)}")
  # Sharding is applied once for the whole state in train/sharding.py, so the
  # per-variable eager sharding of Flax is switched off.
  return nnx.Param(init(rngs.params(), tuple(shape), dtype), out_sharding=tuple(axes),
                   eager_sharding=False)


def maybe_bias(use_bias: bool, rngs, shape, axes, param_dtype) -> nnx.Param | None:
  return param(rngs, nnx.initializers.zeros, shape, axes, param_dtype) if use_bias else None


def add_bias(y: jax.Array, bias: nnx.Param | None) -> jax.Array:
  return y if bias is None else y + bias[...].astype(y.dtype)


class Embed(nnx.Module):
  """Token embedding, also usable as the tied output projection."""

  def __init__(self, vocab_size: int, dim: int, *, axes=("vocab", "embed"), dtype, param_dtype,
               rngs: nnx.Rngs):
    self.dtype = dtype
    self.table = param(rngs, INIT, (vocab_size, dim), axes, param_dtype)

  def __call__(self, ids: jax.Array) -> jax.Array:
    # [B, T] -> [B, T, D]
    return jnp.take(self.table[...].astype(self.dtype), ids, axis=0)

  def attend(self, x: jax.Array) -> jax.Array:
    # [..., D] -> [..., V]
    return jnp.einsum("...D,VD->...V", x, self.table[...].astype(self.dtype))


@jax.custom_vjp
def gradient_barrier(x: jax.Array) -> jax.Array:
  """Identity whose gradient is computed once and kept, not fused into each consumer.

  A norm's input gradient is a long elementwise chain feeding a weight gradient,
  an input gradient and the residual; XLA on CPU fused (and so recomputed) the
  whole chain into each of them: a fifth of the train step (docs/performance.md).
  """
  return x


gradient_barrier.defvjp(lambda x: (x, None),
                        lambda _, grad: (jax.lax.optimization_barrier(grad),))


class LayerNorm(nnx.Module):
  """LayerNorm with scale and bias, computed in float32 for stability."""

  def __init__(self, dim: int, *, eps: float, dtype, param_dtype, rngs: nnx.Rngs,
               grad_barrier: bool = False):
    self.dtype, self.eps = dtype, eps
    self.grad_barrier = grad_barrier
    self.scale = param(rngs, nnx.initializers.ones, (dim,), ("embed",), param_dtype)
    self.bias = param(rngs, nnx.initializers.zeros, (dim,), ("embed",), param_dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    # [B, T, D] -> [B, T, D]
    x32 = (gradient_barrier(x) if self.grad_barrier else x).astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
    return (y * self.scale[...] + self.bias[...]).astype(self.dtype)


class RMSNorm(nnx.Module):
  """Scale by the root mean square, no centring and no bias (T5, LLaMA), in float32.

  `axis` is the logical axis of the normalised dimension: "embed" for the residual stream,
  "head_dim" for queries and keys (model/attention.py).
  """

  def __init__(self, dim: int, *, eps: float, dtype, param_dtype, rngs: nnx.Rngs,
               grad_barrier: bool = False, axis: str = "embed"):
    self.dtype, self.eps = dtype, eps
    self.grad_barrier = grad_barrier
    self.scale = param(rngs, nnx.initializers.ones, (dim,), (axis,), param_dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    # [..., D] -> [..., D]
    x32 = (gradient_barrier(x) if self.grad_barrier else x).astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.square(x32).mean(-1, keepdims=True) + self.eps)
    return (y * self.scale[...]).astype(self.dtype)


NORMS = {"layernorm": LayerNorm, "rmsnorm": RMSNorm}


class Dense(nnx.Module):
  """x @ kernel (+ bias) over the last axis: [.., D] -> [.., E]; with a LoRA adapter if
  `lora_name` is one lora_cfg targets (model/lora.py)."""

  def __init__(self, in_dim: int, out_dim: int, axes: tuple[str, str], *, use_bias: bool, dtype,
               param_dtype, rngs: nnx.Rngs, lora_name: str = "", lora_cfg=None):
    self.dtype = dtype
    self.kernel = param(rngs, INIT, (in_dim, out_dim), axes, param_dtype)
    self.bias = maybe_bias(use_bias, rngs, (out_dim,), axes[1:], param_dtype)
    self.lora = lora.maybe(lora_name, (in_dim,), (out_dim,), axes[:1], axes[1:], lora_cfg, rngs)

  def __call__(self, x: jax.Array, rngs: nnx.Rngs | None = None) -> jax.Array:
    # [..., D] -> [..., E]
    y = add_bias(jnp.einsum("...D,DE->...E", x, self.kernel[...].astype(self.dtype)), self.bias)
    return lora.apply(self.lora, x, y, rngs)


class Mlp(nnx.Module):
  """Position-wise feed-forward block: D -> F -> D, plain or gated."""

  def __init__(self, dim: int, mlp_dim: int, activation: str, *, use_bias: bool, dtype,
               param_dtype, rngs: nnx.Rngs, lora_cfg=None):
    self.act, gated = ACTIVATIONS[activation]
    kw = dict(use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs,
              lora_cfg=lora_cfg)
    self.wi = Dense(dim, mlp_dim, ("embed", "mlp"), lora_name="wi", **kw)
    self.wi_linear = (Dense(dim, mlp_dim, ("embed", "mlp"), lora_name="wi_linear", **kw)
                      if gated else None)
    self.wo = Dense(mlp_dim, dim, ("mlp", "embed"), lora_name="wo", **kw)

  def __call__(self, x: jax.Array, rngs: nnx.Rngs | None = None) -> jax.Array:
    """rngs: dropout of the LoRA adapters' inputs (none if None)."""
    # [B, T, D] -> [B, T, F]
    h = self.act(self.wi(x, rngs))
    if self.wi_linear is not None:
      h = h * self.wi_linear(x, rngs)
    # [B, T, F] -> [B, T, D]
    return self.wo(h, rngs)


class ClassifierHead(nnx.Module):
  """Pooled states to class logits in float32 (fine-tuning's new head): [B, D] -> [B, C]."""

  def __init__(self, dim: int, num_classes: int, *, dtype, param_dtype, rngs: nnx.Rngs):
    self.dense = Dense(dim, num_classes, ("embed", None), use_bias=True, dtype=dtype,
                       param_dtype=param_dtype, rngs=rngs)

  def __call__(self, pooled: jax.Array) -> jax.Array:
    # [B, D] -> [B, C]
    return self.dense(pooled).astype(jnp.float32)


def maybe_classifier(cfg, rngs: nnx.Rngs, **dtypes_kw) -> ClassifierHead | None:
  """The classification head a config with model.num_classes > 0 asks for."""
  if not cfg.num_classes:
    return None
  return ClassifierHead(cfg.embed_dim, cfg.num_classes, rngs=rngs, **dtypes_kw)


class OutputHead(nnx.Module):
  """Hidden states to vocabulary logits in float32: the tied embedding or a kernel [D, V]."""

  def __init__(self, dim: int, vocab_size: int, *, tied: bool, dtype, param_dtype,
               rngs: nnx.Rngs):
    self.dtype = dtype
    self.kernel = None if tied else param(rngs, INIT, (dim, vocab_size), ("embed", "vocab"),
                                          param_dtype)

  def __call__(self, x: jax.Array, embed: Embed) -> jax.Array:
    # [..., D] -> [..., V]
    if self.kernel is None:
      return embed.attend(x).astype(jnp.float32)
    return jnp.einsum("...D,DV->...V", x, self.kernel[...].astype(self.dtype)).astype(jnp.float32)
