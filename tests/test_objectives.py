"""Objectives on small hand-made packed rows, with exact expected arrays."""
import numpy as np
import pytest

from train import objectives
from train.tokenizer import BOS_ID

B = BOS_ID


def _row(targets, segment_ids, positions):
  return {"targets": np.asarray(targets, np.int32),
          "targets_segment_ids": np.asarray(segment_ids, np.int32),
          "targets_positions": np.asarray(positions, np.int32)}


@pytest.mark.parametrize("row, inputs, weights", [
    # Two documents (ending in EOS = 1) and two padding slots.
    (_row([11, 12, 13, 1, 21, 22, 0, 0], [1, 1, 1, 1, 2, 2, 0, 0], [0, 1, 2, 3, 0, 1, 0, 0]),
     [B, 11, 12, 13, B, 21, None, None], [1, 1, 1, 1, 1, 1, 0, 0]),
    # A row that starts mid-document, a one-token segment, no padding.
    (_row([31, 1, 1, 41, 42, 43], [1, 1, 2, 3, 3, 3], [0, 1, 0, 0, 1, 2]),
     [B, 31, B, B, 41, 42], [1, 1, 1, 1, 1, 1]),
])
def test_causal_lm_shifts_right_with_bos_at_each_segment_start(row, inputs, weights):
  out = objectives.causal_lm({k: v.copy() for k, v in row.items()})
  real = np.asarray([i is not None for i in inputs])
  # Inputs under padding are never scored (weight 0), so any value is fine there.
  np.testing.assert_array_equal(out["inputs"][real], [i for i in inputs if i is not None])
  np.testing.assert_array_equal(out["weights"], weights)
  assert out["weights"].dtype == np.float32
  np.testing.assert_array_equal(out["targets"], row["targets"])
  np.testing.assert_array_equal(out["segment_ids"], row["targets_segment_ids"])
  np.testing.assert_array_equal(out["positions"], row["targets_positions"])


def test_causal_lm_leaves_its_input_row_alone():
  row = _row([11, 12, 1, 21], [1, 1, 1, 2], [0, 1, 2, 0])
  before = {k: v.copy() for k, v in row.items()}
  objectives.causal_lm(row)
  for k in row:
    np.testing.assert_array_equal(row[k], before[k])


def test_every_family_objective_is_defined():
  for family, names in objectives.FAMILY_OBJECTIVES.items():
    assert names and all(n in objectives.OBJECTIVES for n in names), family
