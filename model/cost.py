"""What a training row costs, from shapes alone: each family describes its stacks with these.

FLOPs count 2 per multiply-add of the matmuls (norms, biases, softmax and activations
are left out: well under 1% at model widths that matter), as in the PaLM and
Chinchilla MFU definitions. tools/plan estimates activation memory from the same
stack descriptions.
"""
import dataclasses

from model.attention import causal_block_pairs
from model.layers import ACTIVATIONS


@dataclasses.dataclass(frozen=True)
class StackShape:
  """One stack of layers over a training row, as cost estimates see it."""
  depth_field: str  # the config.model field that sets its depth
  layers: int
  length: int  # the row's queries
  cross_length: int = 0  # encoder states its cross-attention reads (0: none)
  causal: bool = False  # self-attention skips the key blocks after each query block


def layer_forward_flops(cfg, stack: StackShape) -> float:
  """Forward matmul FLOPs of one layer of `stack` over its row.

  Attention scores and the weighted sum cost 2 * 2 * N * H per (query, key) pair
  computed: every pair of the row, except that causal self-attention skips the key
  blocks after each `cfg.causal_block` of queries (masked pairs inside a block are
  computed, and counted). Cross-attention projects its keys and values from the
  `cross_length` encoder states.
  """
  d, n, k, h, f = cfg.embed_dim, cfg.num_heads, cfg.kv_heads, cfg.head_dim, cfg.mlp_dim
  mlp_matrices = 3 if ACTIVATIONS[cfg.activation][1] else 2
  length = stack.length

  def attention(queries, keys, pairs):
    projections = queries * (2 * d * n * h) + keys * (2 * d * k * h)
    return 2 * projections + 4 * pairs * n * h

  self_pairs = causal_block_pairs(length, cfg.causal_block if stack.causal else 0)
  flops = attention(length, length, self_pairs) + 2 * length * mlp_matrices * d * f
  if stack.cross_length:
    flops += attention(length, stack.cross_length, length * stack.cross_length)
  return flops


def stacks_forward_flops(cfg, stacks) -> float:
  """Forward FLOPs of every layer of `stacks`."""
  return sum(s.layers * layer_forward_flops(cfg, s) for s in stacks)


def output_flops(cfg, scored: int) -> float:
  """The vocabulary projection of `scored` positions."""
  return 2 * scored * cfg.embed_dim * cfg.vocab_size
