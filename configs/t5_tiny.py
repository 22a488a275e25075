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
  c.data.seq_len = 128  # encoder inputs; the targets' length follows from the noise settings
  c.train.batch_size = 32
  c.train.num_steps = 400
  c.train.log_every = 50
  c.optim.learning_rate = 3e-3
  c.optim.warmup_steps = 50
  c.sample.num_prompts = 0
  return c
