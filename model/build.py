"""From an experiment config to a model: the families, construction, size and cost."""
import jax
import ml_collections
import numpy as np
from flax import nnx

from model import config as config_lib
from model.attention import causal_block_pairs
from model.config import ModelConfig
from model.decoder import Decoder
from model.encoder import Encoder
from model.encoder_decoder import EncoderDecoder
from model.layers import ACTIVATIONS
from model.lstm import Lstm

FAMILIES = {"encoder": Encoder, "decoder": Decoder, "encoder_decoder": EncoderDecoder,
            "lstm": Lstm}


def model_config(config: ml_collections.ConfigDict) -> ModelConfig:
  """Model settings from `config.model` (+ the tokenizer's vocab size), checked for sense."""
  return config_lib.from_config(config, FAMILIES)


def build_model(cfg: ModelConfig, seed: int) -> nnx.Module:
  """A freshly initialised model; call under jax.jit / nnx.eval_shape for sharded or abstract init."""
  return FAMILIES[cfg.family](cfg, rngs=nnx.Rngs(params=seed))


def count_params(cfg: ModelConfig) -> int:
  """Exact parameter count, from shapes only (nothing is allocated)."""
  abstract = nnx.eval_shape(lambda: build_model(cfg, 0))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))


def _layer_forward_flops(cfg: ModelConfig, length: int, cross_length: int = 0,
                         causal: bool = False) -> float:
  """Forward matmul FLOPs of one layer over a row of `length` queries.

  2 FLOPs per multiply-add. Attention scores and the weighted sum cost
  2 * 2 * N * H per (query, key) pair computed: every pair of the row, except that
  `causal` self-attention skips the key blocks after each `cfg.causal_block` of
  queries (masked pairs inside a block are computed, and counted). Cross-attention
  projects its keys and values from the `cross_length` encoder states.
  """
  d, n, k, h, f = cfg.embed_dim, cfg.num_heads, cfg.kv_heads, cfg.head_dim, cfg.mlp_dim
  mlp_matrices = 3 if ACTIVATIONS[cfg.activation][1] else 2

  def attention(queries, keys, pairs):
    projections = queries * (2 * d * n * h) + keys * (2 * d * k * h)
    return 2 * projections + 4 * pairs * n * h

  self_pairs = causal_block_pairs(length, cfg.causal_block if causal else 0)
  flops = attention(length, length, self_pairs) + 2 * length * mlp_matrices * d * f
  if cross_length:
    flops += attention(length, cross_length, length * cross_length)
  return flops


def train_flops_per_row(cfg: ModelConfig, length: int, encoder_length: int = 0,
                        scored: int = 0, prefix: bool = False) -> float:
  """Training FLOPs (forward + backward = 3 x forward) of one packed row.

  `length` is the decoder's (or the encoder-only model's) row length;
  `encoder_length` the encoder row of an encoder-decoder (default: `length`);
  `scored` the positions the output head projects (default: all; masked-LM
  projects only its selected ones, see train/loss.py); `prefix` whether a decoder's
  rows have a bidirectional prefix (prefix LM), which its self-attention reads whole.
  Norms, biases, softmax and activations are not counted (well under 1% at
  model widths that matter), as in the PaLM and Chinchilla MFU definitions.
  """
  scored = scored or length
  output = 2 * scored * cfg.embed_dim * cfg.vocab_size
  if cfg.family == "lstm":
    # Per token and layer: the four gates from the input and from the previous
    # (projected) output, 2 * D * 4F each, and the projection F -> D. The scan
    # runs them one step at a time but computes every one.
    d, f = cfg.embed_dim, cfg.mlp_dim
    forward = cfg.num_layers * 2 * length * (4 * d * f + 4 * d * f + f * d) + output
  elif cfg.family == "decoder":
    forward = cfg.num_layers * _layer_forward_flops(cfg, length, causal=not prefix) + output
  elif cfg.family == "encoder":
    mlm_dense = 2 * scored * cfg.embed_dim * cfg.embed_dim
    forward = cfg.num_layers * _layer_forward_flops(cfg, length) + mlm_dense + output
  else:
    source = encoder_length or length
    forward = (cfg.num_layers * _layer_forward_flops(cfg, source) +
               cfg.decoder_layers * _layer_forward_flops(cfg, length, cross_length=source,
                                                         causal=True) +
               output)
  return 3.0 * forward
