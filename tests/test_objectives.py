"""Objectives on small hand-made packed rows, with exact expected arrays."""
import re

import numpy as np
import pytest

from train import objectives
from train.tokenizer import Specials

TRAINED = Specials.trained(640)  # the layout of a tokenizer trained here
B = TRAINED.bos_id


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
  out = objectives.causal_lm({k: v.copy() for k, v in row.items()}, B)
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
  objectives.causal_lm(row, B)
  for k in row:
    np.testing.assert_array_equal(row[k], before[k])


def test_every_family_has_objectives_and_every_objective_names_real_families():
  from model import FAMILIES
  assert {f: objectives.fitting(f)[0] for f in FAMILIES} == {
      "encoder": "mlm", "decoder": "causal_lm", "encoder_decoder": "span_corruption",
      "lstm": "causal_lm"}
  for objective in objectives.OBJECTIVES.values():
    assert set(objective.FAMILIES) <= set(FAMILIES), objective.NAME


@pytest.mark.parametrize("objective, family", [("causal_lm", "decoder"), ("causal_lm", "lstm"),
                                               ("prefix_lm", "decoder"),
                                               ("prefix_lm", "encoder_decoder"),
                                               ("mlm", "encoder"), ("mlm", "encoder_decoder"),
                                               ("span_corruption", "encoder_decoder"),
                                               ("span_corruption", "decoder")])
def test_example_shapes_are_what_the_objective_makes(built, objective, family):
  """The shapes the compiled step is built for (Experiment.batch_spec) are a real example's."""
  _, _, tok = built
  obj = objectives.make(_config(objective, family, 32), tok)
  _, row = _raw_row(built, obj.raw_length)
  example = obj(row, np.random.default_rng(0))
  assert obj.example_shapes() == {k: (len(v), v.dtype) for k, v in example.items()}
  assert obj.lengths == (len(example["targets"]), len(example.get("encoder_inputs", ())))


def test_an_objective_its_family_cannot_train_fails_naming_the_choices():
  with pytest.raises(ValueError, match=r"config.objective='mlm' does not fit config.model.family="
                                       r"'decoder'; choose one of \('causal_lm', 'span_corruption', "
                                       r"'prefix_lm'\)"):
    objectives.make(_config("mlm", "decoder"))
  with pytest.raises(ValueError, match="config.objective='gpt' is not one of"):
    objectives.make(_config("gpt", "decoder"))


def _config(objective, family, seq_len=32):
  from configs import common
  c = common.base_config()
  c.objective, c.model.family, c.data.seq_len, c.data.vocab_size = objective, family, seq_len, 640
  return c


def _raw_row(built, length, offset=0):
  """A full raw row of real tokens (one document's start), as concat-then-split makes."""
  _, builder, tok = built
  docs = builder.as_data_source("train")
  ids = np.concatenate([tok.encode(docs[i]["text"].decode()) for i in range(offset, offset + 3)])
  return tok, _row(ids[:length], np.ones(length), np.arange(length))


def test_span_corruption_example_detokenises_back_to_the_text(built):
  objective = objectives.make(_config("span_corruption", "encoder_decoder", 128))
  assert (objective.raw_length, objective.targets_length) == (141, 29)
  tok, row = _raw_row(built, 141)
  out = objective(row, np.random.default_rng(0))
  assert out["encoder_inputs"].shape == (128,) and out["targets"].shape == (29,)
  assert (out["encoder_segment_ids"] == 1).all() and (out["segment_ids"] == 1).all()
  # Decoder inputs: the targets shifted right, starting from pad (0) as in T5.
  np.testing.assert_array_equal(out["inputs"], np.r_[0, out["targets"][:-1]])
  # Text of the inputs with each <extra_id_i> replaced by the text of target span i.
  inputs_text, targets_text = tok.decode(out["encoder_inputs"]), tok.decode(out["targets"])
  pieces = re.split(r"(<extra_id_\d+>)", targets_text)
  spans = {pieces[i]: pieces[i + 1] for i in range(1, len(pieces), 2)}
  rebuilt = re.sub(r"<extra_id_\d+>", lambda m: spans[m.group(0)], inputs_text)
  assert rebuilt == tok.decode(row["targets"])


def test_mlm_scores_only_selected_text_tokens_of_each_segment(built):
  tok, row = _raw_row(built, 64)
  row["targets_segment_ids"][40:] = 2
  row["targets_segment_ids"][60:] = 0
  row["targets"][60:] = 0
  out = objectives.make(_config("mlm", "encoder", 64), tok)(row, np.random.default_rng(1))
  scored = out["weights"] > 0
  text = (row["targets"] >= TRAINED.text_ids[0]) & (row["targets_segment_ids"] > 0)
  assert scored.sum() == round(0.15 * text.sum()) and not (scored & ~text).any()
  np.testing.assert_array_equal(out["inputs"][~scored], row["targets"][~scored])
  np.testing.assert_array_equal(out["targets"], row["targets"])


def test_encoder_decoder_mlm_writes_the_whole_row_from_the_encoders_corrupted_one(built):
  """The T5 paper's BERT-style denoising: the encoder reads what an encoder's MLM example
  reads (the same draws), the decoder writes the original tokens, every one scored."""
  tok, row = _raw_row(built, 63)
  row["targets_segment_ids"][40:] = 2
  row["targets_segment_ids"][55:] = 0
  row["targets"][55:] = 0
  objective = objectives.make(_config("mlm", "encoder_decoder", 64), tok)
  assert objective.raw_length == 63 and objective.lengths == (64, 64)
  assert objective.max_scored == 0
  out = objective(row, np.random.default_rng(4))
  encoder = objectives.make(_config("mlm", "encoder", 63), tok)(row, np.random.default_rng(4))
  eos = TRAINED.eos_id
  np.testing.assert_array_equal(out["encoder_inputs"], np.r_[encoder["inputs"][:55], eos, [0] * 8])
  np.testing.assert_array_equal(out["targets"], np.r_[row["targets"][:55], eos, [0] * 8])
  np.testing.assert_array_equal(out["weights"], np.arange(64) < 56)
  np.testing.assert_array_equal(out["inputs"][:56], np.r_[0, out["targets"][:55]])
  assert (out["encoder_inputs"][:55] != row["targets"][:55]).sum() > 0


@pytest.mark.parametrize("family", ["decoder", "encoder_decoder"])
def test_prefix_lm_scores_the_suffix_given_the_prefix(built, family):
  objective = objectives.make(_config("prefix_lm", family, 32))
  _, row = _raw_row(built, objective.raw_length)
  out = objective(row, np.random.default_rng(2))
  tokens = row["targets"]
  if family == "decoder":
    assert objective.bidirectional_prefix
    split = int(out["weights"].argmax())
    np.testing.assert_array_equal(out["targets"], tokens)
    np.testing.assert_array_equal(out["weights"], np.arange(32) >= split)
    np.testing.assert_array_equal(out["prefix"], np.arange(32) <= split)
    assert 1 <= split < 32
  else:
    split = int((out["encoder_segment_ids"] > 0).sum()) - 1  # prefix + EOS
    np.testing.assert_array_equal(out["encoder_inputs"][:split + 1], np.r_[tokens[:split], 1])
    suffix = np.r_[tokens[split:], 1]
    np.testing.assert_array_equal(out["targets"][:len(suffix)], suffix)
    assert out["weights"].sum() == len(suffix)


@pytest.mark.parametrize("reading", ["bidirectional", "causal"])
def test_decoder_span_corruption_is_the_encoder_decoder_example_in_one_row(built, reading):
  """The T5 paper's decoder-only denoising: the corrupted inputs, then the targets, in one
  row of seq_len; only the targets are scored; the inputs are a prefix read both ways unless
  config.decoder_prefix is causal."""
  config = _config("span_corruption", "decoder", 64)
  config.decoder_prefix = reading
  decoder = objectives.make(config)
  pair = objectives.make(_config("span_corruption", "encoder_decoder", decoder.inputs_length))
  assert decoder.inputs_length + decoder.targets_length <= 64 < (
      decoder.inputs_length + 1 + objectives.make(_config(
          "span_corruption", "encoder_decoder", decoder.inputs_length + 1)).targets_length)
  assert decoder.raw_length == pair.raw_length and decoder.lengths == (64, 0)
  _, row = _raw_row(built, decoder.raw_length)
  one, two = decoder(row, np.random.default_rng(3)), pair(row, np.random.default_rng(3))
  n_in, n_out = int(two["encoder_segment_ids"].sum()), int(two["segment_ids"].sum())
  np.testing.assert_array_equal(one["targets"][:n_in + n_out],
                                np.r_[two["encoder_inputs"][:n_in], two["targets"][:n_out]])
  np.testing.assert_array_equal(one["weights"], (np.arange(64) >= n_in) & (np.arange(64) < n_in + n_out))
  assert ("prefix" in one) == (reading == "bidirectional") == decoder.bidirectional_prefix
  if reading == "bidirectional":
    np.testing.assert_array_equal(one["prefix"], np.arange(64) <= n_in)


@pytest.mark.parametrize("objective, family", [("mlm", "encoder"),
                                               ("span_corruption", "encoder_decoder"),
                                               ("prefix_lm", "decoder")])
def test_pipeline_examples_are_keyed_by_seed_and_example_index(built, objective, family):
  """Same batches after an iterator restore; the index, not the call order, picks the mask."""
  from train import input_pipeline
  _, builder, tok = built
  obj = objectives.make(_config(objective, family, 32), tok)
  make = lambda: iter(input_pipeline.make_dataset(builder.as_data_source("train"), tok,
                                                  objective=obj, batch_size=2, seed=5, train=True))
  it = make()
  first = [next(it) for _ in range(3)]
  state = it.get_state()
  later = [next(it) for _ in range(2)]
  resumed = make()
  resumed.set_state(state)
  for a, b in zip(later, [next(resumed) for _ in range(2)]):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  again = make()
  np.testing.assert_array_equal(next(again)["inputs"], first[0]["inputs"])
