"""Flax NNX transformer models: the decoder family, built from model/layers.py blocks."""
from model.decoder import Decoder, DecoderConfig
from model.build import build_model, model_config, flops_per_token, count_params

__all__ = ["Decoder", "DecoderConfig", "build_model", "model_config", "flops_per_token",
           "count_params"]
