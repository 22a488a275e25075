"""Objectives: transforms from packed token rows to model inputs, targets and loss weights.

A packed row (from grain's concat-then-split) holds `targets` [T] with
`targets_segment_ids` (0 = padding) and `targets_positions` [T].
"""
import numpy as np

from train.tokenizer import BOS_ID


def causal_lm(row: dict) -> dict:
  """Next-token prediction: inputs are targets shifted right, BOS at each segment start."""
  # [T] each
  targets = row["targets"]
  segment_ids = row["targets_segment_ids"]
  inputs = np.roll(targets, 1)
  starts = segment_ids != np.roll(segment_ids, 1)
  starts[0] = True
  inputs[starts] = BOS_ID
  return {"inputs": inputs, "targets": targets, "positions": row["targets_positions"],
          "segment_ids": segment_ids, "weights": (segment_ids > 0).astype(np.float32)}


OBJECTIVES = {"causal_lm": causal_lm}
FAMILY_OBJECTIVES = {"decoder": ("causal_lm",)}
