"""LSTM language model: the recurrent baseline the transformers are compared with.

Token embedding, `num_layers` LSTM layers read left to right with a scan over
time, and the output head (tied to the embedding or not). Each layer keeps cells
of width F (`mlp_dim`) and projects its output back to D (`embed_dim`): the LSTM
with a recurrent projection (LSTMP, Sak et al. 2014), as in the large LSTM
language models of Jozefowicz et al. 2016. So every layer maps D -> D like a
transformer block: layers stack and scan, the output ties to the embedding, and
the weights shard like an MLP's (F over `mlp`'s mesh axis, D over `embed`'s).

Each layer's input and the last layer's output are normalised (`norm`, pre-norm
as in GPT-2). Without that, the N(0, 0.02) embedding, which doubles as the tied
output matrix, feeds the gates inputs ~50x below unit scale and the model sits at
the unigram loss for its early steps; the input norms shorten that stall, and the
output norm shortens it further.

The state restarts at zero at each segment start of a packed row, so documents
never see each other, as the decoder's segment mask ensures for attention.

Einsum letters as in model/layers.py, plus Z: the four gates (input, forget,
cell, output), in that order.
"""
import jax
import jax.numpy as jnp
from flax import nnx

from model import cost
from model.layers import NORMS, Embed, OutputHead, param
from model.stack import REMAT_POLICIES, dtypes

# LeCun normal (variance 1 / fan-in) keeps the gates' pre-activations O(1) at any
# width, so the sigmoids and tanh start in their working range; the embedding keeps
# the project's N(0, 0.02), as it doubles as the tied output matrix.
KERNEL_INIT = nnx.initializers.lecun_normal()


class Gate(nnx.Module):
  """One gate's weights: from the layer input, from the previous output, and a bias."""

  def __init__(self, dim: int, cells: int, *, use_bias: bool, bias_init: float, param_dtype,
               rngs: nnx.Rngs):
    self.kernel = param(rngs, KERNEL_INIT, (dim, cells), ("embed", "mlp"), param_dtype)
    self.recurrent_kernel = param(rngs, KERNEL_INIT, (dim, cells), ("embed", "mlp"),
                                  param_dtype)
    self.bias = (param(rngs, nnx.initializers.constant(bias_init), (cells,), ("mlp",),
                       param_dtype) if use_bias else None)


class LstmLayer(nnx.Module):
  """norm(x_t), (c, h) -> c' = f c + i g, h' = P (o tanh c'): [B, T, D] -> [B, T, D]."""

  def __init__(self, dim: int, cells: int, *, norm: str, norm_eps: float, use_bias: bool,
               dropout_rate: float, dtype, param_dtype, rngs: nnx.Rngs):
    self.dtype = dtype
    self.norm = NORMS[norm](dim, eps=norm_eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    gate = lambda bias_init: Gate(dim, cells, use_bias=use_bias, bias_init=bias_init,
                                  param_dtype=param_dtype, rngs=rngs)
    self.input_gate = gate(0.0)
    # A forget-gate bias of 1 keeps the cell's memory from the start (Gers et al. 2000;
    # Jozefowicz et al. 2015).
    self.forget_gate = gate(1.0)
    self.cell_gate = gate(0.0)
    self.output_gate = gate(0.0)
    self.projection = param(rngs, KERNEL_INIT, (cells, dim), ("mlp", "embed"), param_dtype)
    self.dropout = nnx.Dropout(dropout_rate)

  def __call__(self, x: jax.Array, starts: jax.Array, *,
               rngs: nnx.Rngs | None = None) -> jax.Array:
    """x: [B, T, D]; starts: [B, T] bool, True where the state restarts at zero."""
    x = self.norm(x)
    gates = (self.input_gate, self.forget_gate, self.cell_gate, self.output_gate)
    # [D, Z, F] each
    w_input = jnp.stack([g.kernel[...] for g in gates], 1).astype(self.dtype)
    w_recurrent = jnp.stack([g.recurrent_kernel[...] for g in gates], 1).astype(self.dtype)
    projection = self.projection[...].astype(self.dtype)
    # The input's share of every step at once, outside the sequential scan.
    # [B, T, D] -> [B, T, Z, F]
    from_input = jnp.einsum("BTD,DZF->BTZF", x, w_input)
    if gates[0].bias is not None:
      from_input = from_input + jnp.stack([g.bias[...] for g in gates]).astype(self.dtype)

    def step(carry, inputs):
      cell, out = carry  # [B, F] float32, [B, D]
      z_input, start = inputs  # [B, Z, F], [B]
      cell = jnp.where(start[:, None], 0.0, cell)
      out = jnp.where(start[:, None], 0.0, out).astype(self.dtype)
      # [B, D] -> [B, Z, F]
      z = (z_input + jnp.einsum("BD,DZF->BZF", out, w_recurrent)).astype(jnp.float32)
      i, f, o = jax.nn.sigmoid(z[:, 0]), jax.nn.sigmoid(z[:, 1]), jax.nn.sigmoid(z[:, 3])
      cell = f * cell + i * jnp.tanh(z[:, 2])
      # [B, F] -> [B, D]
      out = jnp.einsum("BF,FD->BD", (o * jnp.tanh(cell)).astype(self.dtype), projection)
      return (cell, out), out

    batch, _, dim = x.shape
    init = (jnp.zeros((batch, projection.shape[0]), jnp.float32),
            jnp.zeros((batch, dim), self.dtype))
    # Time-major for the scan: [B, T, ...] -> [T, B, ...] and back.
    _, outputs = jax.lax.scan(step, init, (from_input.swapaxes(0, 1), starts.swapaxes(0, 1)))
    return self.dropout(outputs.swapaxes(0, 1), rngs=rngs, deterministic=rngs is None)


def segment_starts(segment_ids: jax.Array) -> jax.Array:
  """[B, T] bool: the first position of each row and wherever the segment id changes."""
  changed = segment_ids != jnp.roll(segment_ids, 1, axis=1)
  return changed.at[:, 0].set(True)


class Lstm(nnx.Module):
  """Recurrent causal language model over packed rows of token ids."""

  # The decoder's inputs, so the same objective, train step and tools drive it;
  # positions are not read (order comes from the recurrence).
  INPUTS = ("inputs", "positions", "segment_ids")
  OPTIONAL_INPUTS = ()
  GENERATION = None  # no key/value cache for model/decoding.py to step
  OWN_SETTINGS = ()  # config.model fields only this family reads
  CLASSIFY_POOLING = None  # no classification head (train/classification.py)
  USES_ATTENTION = False  # the attention and position settings do not apply

  @staticmethod
  def stacks(cfg, length: int, encoder_length: int = 0, prefix: bool = False):
    """Its layers over a training row, as tools/plan sizes a stack's activations."""
    del encoder_length, prefix
    return (cost.StackShape("num_layers", cfg.num_layers, length, causal=True),)

  @staticmethod
  def forward_flops(cfg, length: int, encoder_length: int = 0, scored: int = 0,
                    prefix: bool = False) -> float:
    """Per token and layer: the four gates from the input and from the previous (projected)
    output, 2 * D * 4F each, and the projection F -> D. The scan runs them one step at a
    time but computes every one."""
    del encoder_length, prefix
    d, f = cfg.embed_dim, cfg.mlp_dim
    return (cfg.num_layers * 2 * length * (4 * d * f + 4 * d * f + f * d)
            + cost.output_flops(cfg, scored or length))

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    self.num_layers, self.scan, self.remat_policy = cfg.num_layers, cfg.scan_layers, cfg.remat
    self.embed = Embed(cfg.vocab_size, cfg.embed_dim, rngs=rngs, **dtypes(cfg))
    self.dropout = nnx.Dropout(cfg.dropout_rate)
    make = lambda layer_rngs: LstmLayer(
        cfg.embed_dim, cfg.mlp_dim, norm=cfg.norm, norm_eps=cfg.norm_eps, use_bias=cfg.use_bias,
        dropout_rate=cfg.dropout_rate, rngs=layer_rngs, **dtypes(cfg))
    if cfg.scan_layers:
      @nnx.split_rngs(splits=cfg.num_layers)
      @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
      def make_layers(layer_rngs):
        return make(layer_rngs)
      self.layers = make_layers(rngs)
    else:
      self.layers = nnx.List([make(rngs) for _ in range(cfg.num_layers)])
    self.final_norm = NORMS[cfg.norm](cfg.embed_dim, eps=cfg.norm_eps, rngs=rngs, **dtypes(cfg))
    self.head = OutputHead(cfg.embed_dim, cfg.vocab_size, tied=cfg.tie_embeddings, rngs=rngs,
                           **dtypes(cfg))

  def __call__(self, inputs: jax.Array, positions: jax.Array, segment_ids: jax.Array, *,
               rngs: nnx.Rngs | None = None) -> jax.Array:
    """Logits [B, T, V] for inputs, positions, segment_ids [B, T]; dropout only if rngs given."""
    return self.logits(self.hidden(inputs, positions, segment_ids, rngs=rngs))

  def hidden(self, inputs: jax.Array, positions: jax.Array, segment_ids: jax.Array, *,
             rngs: nnx.Rngs | None = None) -> jax.Array:
    """The normalised top-layer states [B, T, D] that `logits` projects."""
    del positions
    starts = segment_starts(segment_ids)
    # [B, T] -> [B, T, D]
    x = self.dropout(self.embed(inputs), rngs=rngs, deterministic=rngs is None)
    x = self._run_layers(x, starts, None if rngs is None else rngs.dropout())
    return self.final_norm(x)

  def logits(self, x: jax.Array) -> jax.Array:
    # [..., D] -> [..., V]
    return self.head(x, self.embed)

  def _run_layers(self, x, starts, dropout_key):
    def apply(layer, x, key):
      return layer(x, starts, rngs=None if key is None else nnx.Rngs(dropout=key))

    if self.remat_policy != "none":
      apply = nnx.remat(apply, policy=REMAT_POLICIES[self.remat_policy])
    keys = None if dropout_key is None else jax.random.split(dropout_key, self.num_layers)
    if self.scan:
      @nnx.scan(in_axes=(nnx.Carry, 0, 0), out_axes=nnx.Carry,
                transform_metadata={nnx.PARTITION_NAME: "layers"})
      def body(x, layer, key):
        return apply(layer, x, key)
      return body(x, self.layers, keys)
    for i, layer in enumerate(self.layers):
      x = apply(layer, x, None if keys is None else keys[i])
    return x
