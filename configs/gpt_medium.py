"""GPT-2 medium (355M parameters; Radford et al. 2019): gpt_small's architecture at 24 layers
of width 1024 with 16 heads.

  python -m train.main --config=configs/gpt_medium.py --workdir=/tmp/triform/gpt_medium

Sized for a TPU slice or a GPU: the batch of 512 x 1024 tokens is the GPT-2 paper's.
"""
from configs import common, gpt_small
from model import decoder


def get_config():
  c = gpt_small.get_config()
  common.apply_variant(c, decoder.VARIANTS["medium"])
  c.optim.learning_rate = 3e-4
  return c
