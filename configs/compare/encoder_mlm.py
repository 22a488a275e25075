"""BERT-style encoder, masked language modelling (not in the T5 paper's table).

  python -m train.main --config=configs/compare/encoder_mlm.py --workdir=/tmp/cmp/encoder_mlm
"""
from configs import bert_tiny


def get_config():
  return bert_tiny.get_config()
