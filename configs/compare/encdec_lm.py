"""Encoder-decoder, language modelling: the encoder reads a prefix, the decoder writes the rest.

  python -m train.main --config=configs/compare/encdec_lm.py --workdir=/tmp/cmp/encdec_lm
"""
from configs import t5_lm_tiny


def get_config():
  return t5_lm_tiny.get_config()
