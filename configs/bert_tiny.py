"""BERT-style encoder, tiny: masked-LM pretraining on the built-in corpus, CPU minutes.

  python -m train.main --config=configs/bert_tiny.py --workdir=/tmp/triform/bert_tiny
"""
from configs import common
from model import encoder


def get_config():
  c = common.base_config()
  c.model.family = "encoder"
  c.objective = "mlm"
  common.apply_variant(c, encoder.VARIANTS["tiny"])
  common.tiny_training(c)
  c.sample.num_prompts = 0  # an encoder does not generate
  return c
