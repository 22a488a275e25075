"""A transformer block and a stack of them: what the three families are made of.

A stack turns token embeddings into hidden states. It owns its position scheme
(learned table, sinusoids, rotary or T5 relative bias), its norms and its
layers, which are either unrolled (`layers[0]`, `layers[1]`, ...) or stacked on a
leading `layers` axis and run with a scan, so compile time does not grow with
depth. The two layouts hold the same numbers; `stack_layers`/`unstack_layers`
convert between them.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from model.attention import Attention, segment_mask, write_slots
from model.layers import NORMS, Mlp, constrain
from model.positions import LearnedPositions, RelativePositionBias, sinusoidal

REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class Context(NamedTuple):
  """What every layer of a stack reads besides the hidden states."""
  mask: jax.Array  # [B, 1, T, T]
  bias: jax.Array | None = None  # [B, N, T, T] relative-position bias
  rotary_positions: tuple[jax.Array, jax.Array] | None = None  # [B, T] twice
  encoded: jax.Array | None = None  # [B, S, D] encoder output, for cross-attention
  cross_mask: jax.Array | None = None  # [B, 1, T, S]
  cache_slots: jax.Array | None = None  # [B, T] decoding: cache slots of these tokens
  causal: bool = False  # `mask` is causal self-attention's: no query sees a later key
  causal_block: int = 0  # then XLA's kernels take this many queries at a time (0: whole rows)


def dtypes(cfg) -> dict:
  return dict(dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype))


def make_norm(cfg, rngs: nnx.Rngs) -> nnx.Module:
  return NORMS[cfg.norm](cfg.embed_dim, eps=cfg.norm_eps, rngs=rngs,
                         grad_barrier=cfg.norm_grad_barrier, **dtypes(cfg))


def make_attention(cfg, rngs: nnx.Rngs) -> Attention:
  return Attention(cfg.embed_dim, cfg.num_heads, cfg.kv_heads, cfg.head_dim,
                   use_bias=cfg.use_bias, scale=cfg.scale_attention, rngs=rngs,
                   implementation=cfg.attention, lora_cfg=cfg, qk_norm=cfg.qk_norm,
                   norm_eps=cfg.norm_eps, **dtypes(cfg))


class Block(nnx.Module):
  """Self-attention, optional cross-attention, MLP; each a residual with pre- or post-norm."""

  def __init__(self, cfg, *, cross: bool, rngs: nnx.Rngs):
    self.pre_norm = cfg.norm_position == "pre"
    self.rotary_base = cfg.rotary_base
    self.self_attn_norm = make_norm(cfg, rngs)
    self.self_attn = make_attention(cfg, rngs)
    self.cross_attn_norm = make_norm(cfg, rngs) if cross else None
    self.cross_attn = make_attention(cfg, rngs) if cross else None
    self.mlp_norm = make_norm(cfg, rngs)
    self.mlp = Mlp(cfg.embed_dim, cfg.mlp_dim, cfg.activation, use_bias=cfg.use_bias, rngs=rngs,
                   lora_cfg=cfg, **dtypes(cfg))
    self.dropout = nnx.Dropout(cfg.dropout_rate)

  def __call__(self, x: jax.Array, ctx: Context, *, rngs: nnx.Rngs | None = None,
               cache: dict | None = None) -> tuple[jax.Array, dict | None]:
    """x: [B, T, D] -> (x [B, T, D], cache). Decoding passes this layer's `cache` ({"key",
    "value": [B, C, K, H]}, and "cross_key", "cross_value": [B, S, K, H]) and gets it back
    updated; without one the cache returned is None."""
    self_cache = None if cache is None else (cache["key"], cache["value"])

    def self_attention(h):
      nonlocal self_cache
      out, self_cache = self.self_attn(
          h, h, ctx.mask, bias=ctx.bias, rotary_positions=ctx.rotary_positions,
          rotary_base=self.rotary_base, cache=self_cache, cache_slots=ctx.cache_slots,
          causal=ctx.causal, causal_block=ctx.causal_block, rngs=rngs)
      return out

    x = self._residual(x, self.self_attn_norm, self_attention, rngs)
    if self.cross_attn is not None:
      # Decoding projects the encoder output once (Stack.cross_cache), not at every step.
      projected = None if cache is None else (cache["cross_key"], cache["cross_value"])
      x = self._residual(x, self.cross_attn_norm, lambda h: self.cross_attn(
          h, ctx.encoded, ctx.cross_mask, projected_kv=projected, rngs=rngs)[0], rngs)
    x = self._residual(x, self.mlp_norm, lambda h: self.mlp(h, rngs), rngs)
    if cache is None:
      return x, None
    return x, dict(cache, key=self_cache[0], value=self_cache[1])

  def _residual(self, x, norm, sublayer, rngs):
    drop = lambda y: self.dropout(y, rngs=rngs, deterministic=rngs is None)
    if self.pre_norm:
      return x + drop(sublayer(norm(x)))
    return norm(x + drop(sublayer(x)))


class Stack(nnx.Module):
  """Positions, layers and norms over token embeddings; causal for decoders."""

  def __init__(self, cfg, num_layers: int, *, causal: bool, cross: bool, rngs: nnx.Rngs):
    self.causal, self.position = causal, cfg.position
    self.causal_block = cfg.causal_block
    self.num_layers, self.scan = num_layers, cfg.scan_layers
    self.remat_policy = cfg.remat
    self.positions = (LearnedPositions(cfg.max_length, cfg.embed_dim, rngs=rngs, **dtypes(cfg))
                      if cfg.position == "learned" else None)
    self.relative_bias = (RelativePositionBias(
        cfg.relative_buckets, cfg.relative_max_distance, cfg.num_heads, bidirectional=not causal,
        param_dtype=jnp.dtype(cfg.param_dtype), rngs=rngs) if cfg.position == "relative" else None)
    # Post-norm stacks (BERT) normalise the embeddings; pre-norm ones the output.
    post = cfg.norm_position == "post"
    self.embed_norm = make_norm(cfg, rngs) if post else None
    self.final_norm = None if post else make_norm(cfg, rngs)
    self.dropout = nnx.Dropout(cfg.dropout_rate)
    if cfg.scan_layers:
      @nnx.split_rngs(splits=num_layers)
      @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
      def make_layers(layer_rngs):
        return Block(cfg, cross=cross, rngs=layer_rngs)
      self.layers = make_layers(rngs)
    else:
      self.layers = nnx.List([Block(cfg, cross=cross, rngs=rngs) for _ in range(num_layers)])

  def __call__(self, x: jax.Array, positions: jax.Array, segment_ids: jax.Array, *,
               encoded: jax.Array | None = None, encoder_segment_ids: jax.Array | None = None,
               prefix: jax.Array | None = None, rngs: nnx.Rngs | None = None,
               cache: dict | None = None) -> tuple[jax.Array, dict | None]:
    """(hidden states [B, T, D], cache) of x: [B, T, D] embeddings; positions,
    segment_ids: [B, T]; encoded: [B, S, D]; prefix: optional [B, T], nonzero where a
    causal stack attends bidirectionally.

    Decoding (causal stacks): `cache` from `init_cache`; each row's tokens are
    written at their positions (slot = position) and attend to every filled
    slot at or before their own (and to the slots of a `prefix`, on the prompt); the
    updated cache is returned. Without one: None.
    """
    # [B, T, D]
    if self.position == "learned":
      x = x + self.positions(positions)
    elif self.position == "sinusoidal":
      x = x + sinusoidal(positions, x.shape[-1], x.dtype)
    if self.embed_norm is not None:
      x = self.embed_norm(x)
    x = constrain(self.dropout(x, rngs=rngs, deterministic=rngs is None))
    if cache is None:
      key_positions, key_segments = positions, segment_ids
      mask = segment_mask(segment_ids, segment_ids, self.causal, prefix)
    else:
      cache = dict(cache, segments=write_slots(cache["segments"], segment_ids, positions))
      # [B, C]: a slot's position is its index.
      key_segments = cache["segments"]
      key_positions = jnp.broadcast_to(jnp.arange(key_segments.shape[1]), key_segments.shape)
      # [B, 1, T, C]
      visible = key_positions[:, None, None, :] <= positions[:, None, :, None]
      if prefix is not None:  # the prefix's slots are visible from every query of the row
        key_prefix = write_slots(jnp.zeros_like(key_segments), prefix, positions)
        visible |= key_prefix.astype(bool)[:, None, None, :]
      mask = (segment_ids[:, None, :, None] == key_segments[:, None, None, :]) & visible
    ctx = Context(
        mask=mask,
        bias=(self.relative_bias(positions, key_positions)
              if self.relative_bias is not None else None),
        rotary_positions=(positions, positions) if self.position == "rotary" else None,
        encoded=encoded,
        cross_mask=(None if encoder_segment_ids is None
                    else segment_mask(segment_ids, encoder_segment_ids, causal=False)),
        cache_slots=None if cache is None else positions,
        # A prefix's keys are visible from earlier queries: not causal.
        causal=self.causal and prefix is None, causal_block=self.causal_block)
    x, cache = self._run_layers(x, ctx, None if rngs is None else rngs.dropout(), cache)
    return (x if self.final_norm is None else self.final_norm(x)), cache

  def init_cache(self, batch: int, length: int, num_kv_heads: int, head_dim: int,
                 dtype) -> dict:
    """An empty decoding cache of `length` slots per row: keys and values [L, B, C, K, H]
    and the segment id of each slot [B, C] (0: empty)."""
    shape = (self.num_layers, batch, length, num_kv_heads, head_dim)
    return {"key": jnp.zeros(shape, dtype), "value": jnp.zeros(shape, dtype),
            "segments": jnp.zeros((batch, length), jnp.int32)}

  def cross_cache(self, encoded: jax.Array) -> dict:
    """Each layer's cross-attention keys and values of the encoder output [B, S, D], once:
    {"cross_key", "cross_value": [L, B, S, K, H]}."""
    if self.scan:
      @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=(nnx.Carry, 0),
                transform_metadata={nnx.PARTITION_NAME: "layers"})
      def project(carry, block):
        return carry, block.cross_attn.project_kv(encoded)
      _, (keys, values) = project(None, self.layers)
    else:
      keys, values = map(jnp.stack, zip(*(b.cross_attn.project_kv(encoded) for b in self.layers)))
    return {"cross_key": keys, "cross_value": values}

  def _run_layers(self, x, ctx: Context, dropout_key, cache):
    """(x, cache) after every layer; per-layer cache entries have a leading layers axis."""
    def apply(block, x, key, layer_cache):
      x, layer_cache = block(x, ctx, rngs=None if key is None else nnx.Rngs(dropout=key),
                             cache=layer_cache)
      return constrain(x), layer_cache

    policy = REMAT_POLICIES[self.remat_policy]
    if self.remat_policy != "none":
      apply = nnx.remat(apply, policy=policy)
    keys = None if dropout_key is None else jax.random.split(dropout_key, self.num_layers)
    layer_cache = None if cache is None else {k: v for k, v in cache.items() if k != "segments"}
    if self.scan:
      @nnx.scan(in_axes=(nnx.Carry, 0, 0, 0), out_axes=(nnx.Carry, 0),
                transform_metadata={nnx.PARTITION_NAME: "layers"})
      def body(x, block, key, per_layer):
        return apply(block, x, key, per_layer)
      x, new_layers = body(x, self.layers, keys, layer_cache)
    else:
      outputs = []
      for i, block in enumerate(self.layers):
        per_layer = None if cache is None else {k: v[i] for k, v in layer_cache.items()}
        x, new = apply(block, x, None if keys is None else keys[i], per_layer)
        outputs.append(new)
      new_layers = jax.tree.map(lambda *xs: jnp.stack(xs), *outputs)
    if cache is None:
      return x, None
    return x, dict(new_layers, segments=cache["segments"])


def stack_layers(layers: dict) -> dict:
  """Unrolled params {0: tree, 1: tree, ...} -> one tree with a leading layers axis."""
  trees = [layers[i] for i in range(len(layers))]
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack_layers(stacked: dict) -> dict:
  """The inverse of `stack_layers`."""
  num_layers = jax.tree.leaves(stacked)[0].shape[0]
  return {i: jax.tree.map(lambda x: x[i], stacked) for i in range(num_layers)}
