"""The T5 paper's architecture-by-objective table (Raffel et al. 2020, Table 2) at CPU scale,
plus the BERT-style encoder: one config per cell, all at the tiny width and four layers in all
(2 + 2 for the encoder-decoder). tools/compare trains them at matched training FLOPs:

  python -m tools.compare run --configs=configs/compare/encdec_denoising.py,... \
      --budget=flops:2e14 --out=/tmp/triform/compare

| architecture | denoising | language modelling |
|---|---|---|
| encoder-decoder | encdec_denoising | encdec_lm |
| decoder-only (causal) | decoder_denoising | decoder_lm |
| prefix LM (decoder, bidirectional prefix) | prefixlm_denoising | prefixlm_lm |
| encoder (BERT) | encoder_mlm | |

Validation bits per byte compare only within an objective (tools/compare_runs.py); the
fine-tuned task metrics compare across all cells.
"""
from configs import common
from model import decoder


def table_decoder(c):
  """A decoder cell at the table's size, the decoder's tiny variant (four layers of width 128),
  whatever size configs/gpt_tiny.py was tuned to for its own wall-time budget."""
  return common.apply_variant(c, decoder.VARIANTS["tiny"])

