"""From an experiment config to a model: the families, construction, size and cost.

FAMILIES is the registry. Each family class describes itself: the batch fields it
reads (INPUTS, OPTIONAL_INPUTS), how it generates (GENERATION), whether it reads the
attention settings (USES_ATTENTION), the config fields only it reads (OWN_SETTINGS),
its stacks over a training row and their FLOPs (`stacks`, `forward_flops`). Nothing
outside the family classes branches on a family's name.
"""
import jax
import ml_collections
import numpy as np
from flax import nnx

from model import config as config_lib
from model import init
from model.config import ModelConfig
from model.decoder import Decoder
from model.encoder import Encoder
from model.encoder_decoder import EncoderDecoder
from model.lstm import Lstm

FAMILIES = {"encoder": Encoder, "decoder": Decoder, "encoder_decoder": EncoderDecoder,
            "lstm": Lstm}


def model_config(config: ml_collections.ConfigDict) -> ModelConfig:
  """Model settings from `config.model` (+ the tokenizer's vocab size), checked for sense."""
  return config_lib.from_config(config, FAMILIES)


def build_model(cfg: ModelConfig, seed: int) -> nnx.Module:
  """A freshly initialised model; call under jax.jit / nnx.eval_shape for sharded or abstract init."""
  model = FAMILIES[cfg.family](cfg, rngs=nnx.Rngs(params=seed))
  init.apply(model, cfg)
  return model


def abstract_model(cfg: ModelConfig) -> nnx.Module:
  """The model with shapes in place of values: nothing is allocated."""
  return nnx.eval_shape(lambda: build_model(cfg, 0))


def model_graphdef(cfg: ModelConfig) -> nnx.GraphDef:
  """The model's structure without values; nnx.merge with params gives the model."""
  graphdef, _ = nnx.split(abstract_model(cfg), nnx.Param)
  return graphdef


# Logical axes of the tables that scaling laws leave out of the "non-embedding" count
# (Kaplan et al. 2020): token embeddings and projections onto the vocabulary, position tables.
EMBEDDING_AXES = ("vocab", "length")


def count_params(cfg: ModelConfig, embedding: bool = True) -> int:
  """Exact parameter count, from shapes only (nothing is allocated); `embedding=False` leaves
  out the parameters with an EMBEDDING_AXES axis."""
  params = nnx.state(abstract_model(cfg), nnx.Param)
  leaves = jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nnx.Variable))
  return sum(int(np.prod(x.shape)) for x in leaves
             if embedding or not set(EMBEDDING_AXES) & set(x.get_metadata().get("out_sharding") or ()))


def train_flops_per_row(cfg: ModelConfig, length: int, encoder_length: int = 0,
                        scored: int = 0, prefix: bool = False) -> float:
  """Training FLOPs (forward + backward = 3 x forward) of one packed row (model/cost.py).

  `length` is the decoder's (or the encoder-only model's) row length;
  `encoder_length` the encoder row of an encoder-decoder (default: `length`);
  `scored` the positions the output head projects (default: all; masked-LM
  projects only its selected ones, see train/loss.py); `prefix` whether a decoder's
  rows have a bidirectional prefix (prefix LM), which its self-attention reads whole.
  """
  return 3.0 * FAMILIES[cfg.family].forward_flops(cfg, length, encoder_length, scored, prefix)
