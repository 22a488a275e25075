"""Flax NNX transformer models: encoder, decoder and encoder-decoder from model/layers.py blocks."""
from model.build import FAMILIES, build_model, count_params, model_config, train_flops_per_row
from model.config import ModelConfig
from model.decoder import Decoder
from model.encoder import Encoder
from model.encoder_decoder import EncoderDecoder

__all__ = ["FAMILIES", "ModelConfig", "Decoder", "Encoder", "EncoderDecoder", "build_model",
           "model_config", "count_params", "train_flops_per_row"]
