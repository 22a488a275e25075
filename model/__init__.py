"""Flax NNX transformer models: encoder, decoder and encoder-decoder from model/layers.py blocks."""
from model.build import (FAMILIES, abstract_model, build_model, count_params, model_config,
                         model_graphdef, train_flops_per_row)
from model.config import ModelConfig
from model.decoder import Decoder
from model.encoder import Encoder
from model.encoder_decoder import EncoderDecoder

__all__ = ["FAMILIES", "ModelConfig", "Decoder", "Encoder", "EncoderDecoder", "abstract_model",
           "build_model", "model_config", "model_graphdef", "count_params",
           "train_flops_per_row"]
