"""T5-style encoder-decoder with the LM objective of the T5 paper (prefix to the encoder,
continuation from the decoder), tiny: the cross pair to gpt_prefixlm_tiny.

  python -m train.main --config=configs/t5_lm_tiny.py --workdir=/tmp/triform/t5_lm
"""
from configs import t5_tiny


def get_config():
  c = t5_tiny.get_config()
  c.objective = "prefix_lm"
  return c
