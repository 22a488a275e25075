"""Encoder-decoder, denoising (T5 span corruption): the T5 paper's baseline cell.

  python -m train.main --config=configs/compare/encdec_denoising.py --workdir=/tmp/cmp/encdec_denoising
"""
from configs import t5_tiny


def get_config():
  return t5_tiny.get_config()
