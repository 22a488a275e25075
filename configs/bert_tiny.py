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
  c.data.seq_len = 128
  c.train.batch_size = 32
  c.train.num_steps = 400
  c.train.log_every = 50
  c.optim.learning_rate = 3e-3
  c.optim.warmup_steps = 50
  c.sample.num_prompts = 0  # an encoder does not generate
  return c
