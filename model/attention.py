"""Multi-head, multi-query and grouped-query attention over packed rows.

Packed rows hold several documents; `segment_ids` (0 = padding) keep each token
attending only to its own document, in self- and cross-attention alike.
"""
import jax
import jax.numpy as jnp
from flax import nnx

from model import lora
from model.layers import INIT, RMSNorm, add_bias, maybe_bias, param
from model.positions import apply_rotary


def segment_mask(q_segment_ids: jax.Array, k_segment_ids: jax.Array, causal: bool,
                 prefix: jax.Array | None = None) -> jax.Array:
  """True where query t may attend to key s: same segment (and s <= t if causal, or s in
  the bidirectional `prefix` [B, S] of a prefix LM).

  Padding (segment 0) attends only to padding, so a padded query row is never
  fully masked when its keys include padding; its output is ignored by the loss.
  """
  # [B, T], [B, S] -> [B, 1, T, S]
  mask = q_segment_ids[:, None, :, None] == k_segment_ids[:, None, None, :]
  if causal:
    t, s = q_segment_ids.shape[-1], k_segment_ids.shape[-1]
    allowed = jnp.tril(jnp.ones((t, s), bool))[None, None]
    if prefix is not None:
      # [B, S] -> [B, 1, 1, S]: keys of the prefix are visible from every query of
      # their segment (a later query is in the prefix too, or past it).
      allowed = allowed | prefix.astype(bool)[:, None, None, :]
    mask &= allowed
  return mask


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array,
           bias: jax.Array | None = None, scale: float | None = None) -> jax.Array:
  """Softmax attention in float32, written as plain einsums for XLA.

  q [B, T, N, H]; k, v [B, S, K, H] with K dividing N (query head n reads
  key/value head n // (N / K)); mask [B, 1, T, S]; bias [B or 1, N, T, S];
  scale defaults to 1 / sqrt(H). Returns [B, T, N, H].

  The G = N / K query heads of a key/value head are stacked along the query
  axis, so every tensor is 4-D (XLA on CPU ran 5-D attention 2x slower), and the
  output is divided by the softmax's sums after the value product, over
  [B, T, N, H] instead of [B, N, T, S] (docs/performance.md has the figures).
  """
  b, t, n, h = q.shape
  kv_heads, group = k.shape[2], n // k.shape[2]
  scale = h ** -0.5 if scale is None else scale
  # [B, T, N, H] -> [B, K, G * T, H]
  q = q.reshape(b, t, kv_heads, group, h).transpose(0, 2, 3, 1, 4).reshape(
      b, kv_heads, group * t, h)
  # [B, K, G * T, S]
  logits = jnp.einsum("BKQH,BSKH->BKQS", q, k, preferred_element_type=jnp.float32) * scale
  if bias is not None:
    logits += bias.astype(jnp.float32).reshape(bias.shape[0], kv_heads, group * t, -1)
  logits = jnp.where(jnp.tile(mask, (1, 1, group, 1)), logits, -1e30)
  peak = jax.lax.stop_gradient(logits.max(-1, keepdims=True))
  weights = jnp.exp(logits - peak)
  # [B, K, G * T, H] / [B, K, G * T, 1]
  out = jnp.einsum("BKQS,BSKH->BKQH", weights.astype(v.dtype), v,
                   preferred_element_type=jnp.float32) / weights.sum(-1, keepdims=True)
  # [B, K, G * T, H] -> [B, T, N, H]
  return out.reshape(b, kv_heads, group, t, h).transpose(0, 3, 1, 2, 4).reshape(
      b, t, n, h).astype(q.dtype)


def attention_weights(q: jax.Array, k: jax.Array, mask: jax.Array,
                      bias: jax.Array | None = None, scale: float | None = None) -> jax.Array:
  """The softmax weights [B, N, T, S] that `attend` gives each key, in float32.

  Same arguments as `attend` (q [B, T, N, H]; k [B, S, K, H]; mask [B, 1, T, S]; bias
  [B or 1, N, T, S]); for reading a model's attention, not for training.
  """
  group = q.shape[2] // k.shape[2]
  scale = q.shape[-1] ** -0.5 if scale is None else scale
  # [B, S, K, H] -> [B, S, N, H]: query head n reads key head n // group.
  k = jnp.repeat(k, group, axis=2)
  # [B, N, T, S]
  logits = jnp.einsum("BTNH,BSNH->BNTS", q, k, preferred_element_type=jnp.float32) * scale
  if bias is not None:
    logits += bias.astype(jnp.float32)
  return jax.nn.softmax(jnp.where(mask, logits, -1e30), axis=-1)


def causal_block_bounds(length: int, block: int) -> list[tuple[int, int]]:
  """(start, end) of each block of `block` queries in a row of `length` (block 0: one)."""
  block = block or length
  return [(start, min(start + block, length)) for start in range(0, length, block)]


def causal_block_pairs(length: int, block: int) -> int:
  """Query-key pairs whose scores `attend_causal_blocks` computes over a row of `length`
  (block 0: all length * length)."""
  return sum((end - start) * end for start, end in causal_block_bounds(length, block))


def attend_causal_blocks(kernel, q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array,
                         bias: jax.Array | None, block: int) -> jax.Array:
  """`kernel(q, k, v, mask, bias)` a block of `block` queries at a time, each block over
  the keys up to its last query only.

  q [B, T, N, H]; k, v [B, T, K, H]; mask [B, 1, T, T]; bias [B or 1, N, T, T] or None.
  Returns [B, T, N, H]. Exact (up to float rounding) when `mask` lets no query see a later
  key, as in causal self-attention without a prefix: the keys left out are all masked.
  Blocks of 128 over T = 1024 compute 56% of the whole-row scores.
  """
  outs = []
  for start, end in causal_block_bounds(q.shape[1], block):
    rows, keys = slice(start, end), slice(0, end)
    outs.append(kernel(q[:, rows], k[:, keys], v[:, keys], mask[:, :, rows, keys],
                       None if bias is None else bias[:, :, rows, keys]))
  # [B, T, N, H]
  return jnp.concatenate(outs, axis=1)


class Attention(nnx.Module):
  """Queries [D, N, H]; keys and values [D, K, H] with K dividing N; output [N, H, D].

  K = N is multi-head, K = 1 multi-query, anything between grouped-query. With `qk_norm`,
  each head's query and key are RMS-normalised over H (one learned scale [H] each, shared
  by the heads) before rotary positions, so no score exceeds max|scale_q| max|scale_k|
  sqrt(H) (ViT-22B, Dehghani et al. 2023, normalises them against growing scores).
  """

  def __init__(self, dim: int, num_heads: int, num_kv_heads: int, head_dim: int, *,
               use_bias: bool, scale: bool, dtype, param_dtype, rngs: nnx.Rngs,
               implementation: str = "einsum", lora_cfg=None, qk_norm: bool = False,
               norm_eps: float = 1e-6):
    if num_heads % num_kv_heads:
      raise ValueError(f"num_kv_heads={num_kv_heads} must divide num_heads={num_heads}")
    if implementation == "cudnn" and jax.default_backend() != "gpu":
      raise ValueError(f"config.model.attention='cudnn' needs an NVIDIA GPU, and JAX runs on "
                       f"{jax.default_backend()!r}; use 'einsum' or 'jax_nn'")
    self.dtype = dtype
    self.implementation = implementation
    # True: each call sows its weights [B, N, T, S] as nnx.Intermediate "weights"
    # (tools/inspect.py reads them; training leaves it off).
    self.record_weights = False
    # T5 folds 1/sqrt(H) into the initialisation of the queries instead (scale=False).
    self.scale = None if scale else 1.0
    q_axes, kv_axes = ("embed", "heads", "head_dim"), ("embed", "kv_heads", "head_dim")
    self.query = param(rngs, INIT, (dim, num_heads, head_dim), q_axes, param_dtype)
    self.key = param(rngs, INIT, (dim, num_kv_heads, head_dim), kv_axes, param_dtype)
    self.value = param(rngs, INIT, (dim, num_kv_heads, head_dim), kv_axes, param_dtype)
    self.out = param(rngs, INIT, (num_heads, head_dim, dim), ("heads", "head_dim", "embed"),
                     param_dtype)
    self.query_bias = maybe_bias(use_bias, rngs, (num_heads, head_dim), q_axes[1:], param_dtype)
    self.key_bias = maybe_bias(use_bias, rngs, (num_kv_heads, head_dim), kv_axes[1:], param_dtype)
    self.value_bias = maybe_bias(use_bias, rngs, (num_kv_heads, head_dim), kv_axes[1:],
                                 param_dtype)
    self.out_bias = maybe_bias(use_bias, rngs, (dim,), ("embed",), param_dtype)
    norm = lambda: RMSNorm(head_dim, eps=norm_eps, dtype=dtype, param_dtype=param_dtype,
                           rngs=rngs, axis="head_dim")
    self.query_norm, self.key_norm = (norm(), norm()) if qk_norm else (None, None)
    # LoRA adapters of the kernels lora_cfg targets (model/lora.py); None elsewhere.
    self.query_lora = lora.maybe("query", (dim,), (num_heads, head_dim), q_axes[:1], q_axes[1:],
                                 lora_cfg, rngs)
    self.key_lora = lora.maybe("key", (dim,), (num_kv_heads, head_dim), kv_axes[:1], kv_axes[1:],
                               lora_cfg, rngs)
    self.value_lora = lora.maybe("value", (dim,), (num_kv_heads, head_dim), kv_axes[:1],
                                 kv_axes[1:], lora_cfg, rngs)
    self.out_lora = lora.maybe("out", (num_heads, head_dim), (dim,), ("heads", "head_dim"),
                               ("embed",), lora_cfg, rngs)

  def project_kv(self, kv: jax.Array, rngs: nnx.Rngs | None = None
                 ) -> tuple[jax.Array, jax.Array]:
    """Keys and values of `kv` [B, S, D]: ([B, S, K, H], [B, S, K, H])."""
    cast = lambda w: w[...].astype(self.dtype)
    k = add_bias(jnp.einsum("BSD,DKH->BSKH", kv, cast(self.key)), self.key_bias)
    v = add_bias(jnp.einsum("BSD,DKH->BSKH", kv, cast(self.value)), self.value_bias)
    k = lora.apply(self.key_lora, kv, k, rngs)
    if self.key_norm is not None:
      k = self.key_norm(k)
    return k, lora.apply(self.value_lora, kv, v, rngs)

  def __call__(self, x: jax.Array, kv: jax.Array | None, mask: jax.Array, *,
               projected_kv: tuple[jax.Array, jax.Array] | None = None, bias=None,
               rotary_positions=None, rotary_base: float = 10_000.0, cache: tuple | None = None,
               cache_slots=None, causal: bool = False, causal_block: int = 0,
               rngs: nnx.Rngs | None = None) -> tuple[jax.Array, tuple | None]:
    """(output [B, T, D], cache) for queries x [B, T, D] over kv [B, S, D], the source of
    keys and values (x itself for self-attention).

    projected_kv: instead of kv (None then), its (keys, values) from `project_kv`,
    computed once (cross-attention decoding). mask: [B, 1, T, S] boolean; bias:
    optional [B, N, T, S] added to the logits; rotary_positions: optional
    ([B, T], [B, S]) positions of queries and keys.
    cache: for decoding, (key, value) [B, C, K, H]: this call's keys and values are
    written at `cache_slots` [B, T] and the queries attend over all C slots (mask
    and bias then end in C); the cache returned is the updated one, else None.
    causal: `mask` is causal self-attention's (no query sees a later key). Without a
    cache, XLA's kernels (einsum, jax_nn) then take the queries in blocks of `causal_block`
    (0: whole rows) over only the keys they can see, and cuDNN's is told so (is_causal),
    which skips the hidden tiles instead of reading them from the mask.
    rngs: dropout of the LoRA adapters' inputs (none if None).
    """
    cast = lambda w: w[...].astype(self.dtype)
    # [B, T, D] -> [B, T, N, H]; [B, S, D] -> [B, S, K, H]
    q = add_bias(jnp.einsum("BTD,DNH->BTNH", x, cast(self.query)), self.query_bias)
    q = lora.apply(self.query_lora, x, q, rngs)
    if self.query_norm is not None:
      q = self.query_norm(q)
    k, v = self.project_kv(kv, rngs) if projected_kv is None else projected_kv
    if rotary_positions is not None:
      q = apply_rotary(q, rotary_positions[0], rotary_base)
      k = apply_rotary(k, rotary_positions[1], rotary_base)
    if cache is not None:
      k, v = cache = (write_slots(cache[0], k, cache_slots), write_slots(cache[1], v, cache_slots))
    if self.record_weights:
      self.sow(nnx.Intermediate, "weights", attention_weights(q, k, mask, bias, self.scale))
    # Grouped heads are handled inside: N query heads share K key/value heads.
    causal, cudnn = causal and cache is None, self.implementation == "cudnn"
    if self.implementation == "einsum":
      kernel = lambda q, k, v, mask, bias: attend(q, k, v, mask, bias, self.scale)
    else:  # jax.nn's: XLA's own (jax_nn) or cuDNN's fused kernel (cudnn)
      kernel = lambda q, k, v, mask, bias: jax.nn.dot_product_attention(
          q, k, v, None if bias is None else bias.astype(q.dtype), mask, scale=self.scale,
          is_causal=cudnn and causal, implementation="cudnn" if cudnn else None)
    # [B, T, N, H]
    if causal and causal_block and not cudnn:
      out = attend_causal_blocks(kernel, q, k, v, mask, bias, causal_block)
    else:
      out = kernel(q, k, v, mask, bias)
    # [B, T, N, H] -> [B, T, D]
    y = add_bias(jnp.einsum("BTNH,NHD->BTD", out, cast(self.out)), self.out_bias)
    return lora.apply(self.out_lora, out, y, rngs), cache


def write_slots(cache: jax.Array, new: jax.Array, slots: jax.Array) -> jax.Array:
  """cache [B, C, ...] with new [B, T, ...] written at slots [B, T] of each row."""
  rows = jnp.arange(cache.shape[0])[:, None]
  # [B, T] indices into [B, C]
  return cache.at[rows, slots].set(new.astype(cache.dtype))
