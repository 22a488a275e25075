"""Prefix LM, language modelling: a decoder reads a random prefix both ways, predicts the rest.

  python -m train.main --config=configs/compare/prefixlm_lm.py --workdir=/tmp/cmp/prefixlm_lm
"""
from configs import compare, gpt_prefixlm_tiny


def get_config():
  return compare.table_decoder(gpt_prefixlm_tiny.get_config())
