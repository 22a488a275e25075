"""The tokenizer: fixed special ids, sentinels at the top, exact round trips, byte counts."""
import numpy as np
import pytest

from tests.conftest import TEST_VOCAB
from train import tokenizer


def test_special_ids_are_fixed(built):
  tok = built[2]
  sp = tok.sp
  assert [sp.id_to_piece(i) for i in range(5)] == ["<pad>", "</s>", "<unk>", "<s>", "<mask>"]
  assert (tok.pad_id, tok.eos_id, tok.bos_id, tok.mask_id, tok.num_sentinels) == (0, 1, 3, 4, 100)
  assert tok.vocab_size == TEST_VOCAB == tok.sp_size + 100
  assert tok.sentinel_id(0) == TEST_VOCAB - 1 and tok.sentinel_id(99) == tok.sp_size


def test_round_trips_the_validation_text_and_unseen_characters(built):
  _, builder, tok = built
  docs = builder.as_data_source("validation")
  texts = [docs[i]["text"].decode() for i in range(len(docs))]
  texts += ["  indented\n\n\ttabs  and   spaces ", "naïve café ünïcode 日本語 🙂", ""]
  for text in texts:
    ids = tok.encode(text)
    assert ids.dtype == np.int32 and (ids < tok.sp_size).all()
    assert tok.decode(ids) == text


def test_sentinels_encode_and_decode(built):
  tok = built[2]
  ids = tok.encode("a <extra_id_0> b <extra_id_7>")
  assert tok.sentinel_id(0) in ids and tok.sentinel_id(7) in ids
  assert tok.decode(ids) == "a <extra_id_0> b <extra_id_7>"


def test_decode_stops_at_eos_and_drops_padding(built):
  tok = built[2]
  ids = list(tok.encode("x = 1")) + [tok.eos_id] + list(tok.encode("unseen"))
  assert tok.decode([tok.pad_id] + ids) == "x = 1"


def test_byte_lengths_add_up_to_the_text_length(built):
  tok = built[2]
  lengths = tok.byte_lengths()
  for text in ["def f(x):\n    return x\n", "日本語 🙂 naïve", "<mask>"]:
    assert lengths[tok.encode(text)].sum() == len(text.encode("utf-8"))
  assert lengths[[tok.pad_id, tok.eos_id, tok.bos_id, tok.sentinel_id(0)]].sum() == 0


def test_cached_model_is_reused(built, tmp_path):
  _, builder, _ = built
  docs = builder.as_data_source("train")
  path = tmp_path / "spm.model"
  first = tokenizer.load_or_train(str(path), lambda: (docs[i]["text"].decode() for i in range(5)),
                                  512, 5000)

  def no_text():
    raise AssertionError("a cached tokenizer must load without reading text")
  second = tokenizer.load_or_train(str(path), no_text, 512, 5000)
  assert first.sp.serialized_model_proto() == second.sp.serialized_model_proto()


def test_a_corpus_too_small_for_the_vocabulary_says_so(tmp_path):
  with pytest.raises(ValueError, match=r"too small for config.data.vocab_size=4096.*at most \d+"):
    tokenizer.train(["alpha beta gamma\n"] * 50, 4096, 1000)
