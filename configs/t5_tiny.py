"""T5-style encoder-decoder, tiny: span corruption on the built-in corpus, CPU minutes.

  python -m train.main --config=configs/t5_tiny.py --workdir=/tmp/triform/t5_tiny
"""
from configs import common
from model import encoder_decoder


def get_config():
  c = common.base_config()
  c.model.family = "encoder_decoder"
  c.objective = "span_corruption"
  common.apply_variant(c, encoder_decoder.VARIANTS["tiny"])
  common.tiny_training(c)
  c.sample.num_prompts = 0
  return c
