"""Decoder-only, language modelling: next-token prediction over whole rows.

  python -m train.main --config=configs/compare/decoder_lm.py --workdir=/tmp/cmp/decoder_lm
"""
from configs import compare, gpt_tiny


def get_config():
  return compare.table_decoder(gpt_tiny.get_config())
