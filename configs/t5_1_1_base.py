"""T5.1.1-base: T5-base with GeGLU feed-forward (width 2048) and an untied output layer;
247,577,856 parameters.

  python -m train.main --config=configs/t5_1_1_base.py --workdir=/tmp/triform/t5_1_1_base
"""
from configs import t5_base


def get_config():
  return t5_base.get_config("1_1_base")
