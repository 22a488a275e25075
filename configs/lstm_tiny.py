"""LSTM language model, tiny: the recurrent baseline next to the decoder's four-layer tiny
variant, with about its parameter count (1.34M: the same tied 4096 x 128 embedding, two
LSTM layers of 352 cells projected back to width 128) and its token budget (32 rows x 128
tokens x 400 steps).

  python -m train.main --config=configs/lstm_tiny.py --workdir=/tmp/triform/lstm_tiny
"""
from configs import common


def get_config():
  c = common.base_config()
  c.model.family = "lstm"
  c.objective = "causal_lm"
  c.model.num_layers = 2
  c.model.embed_dim = 128  # embedding, and each layer's input and projected output
  c.model.mlp_dim = 352  # LSTM cells per layer: 352 matches gpt_tiny's 1.33M parameters
  common.tiny_training(c)
  return c
