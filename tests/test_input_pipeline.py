"""The grain pipeline: deterministic, seeded, packed consistently, resumable mid-stream."""
import itertools
import json

import numpy as np

from train import input_pipeline, objectives

SEQ_LEN, BATCH = 32, 4


def _batches(built, n, *, seed=0, train=True, state=None):
  """The first `n` batches of a fresh iterator (moved to `state` first if given)."""
  _, builder, tok = built
  dataset = input_pipeline.make_dataset(
      builder.as_data_source("train" if train else "validation"), tok, objective=objectives.CausalLM(SEQ_LEN, tok.specials),
      batch_size=BATCH, seed=seed, train=train)
  it = iter(dataset)
  if state is not None:
    it.set_state(state)
  return list(itertools.islice(it, n)), it


def _assert_same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_same_seed_same_batches_other_seed_other_order(built):
  first, _ = _batches(built, 5)
  again, _ = _batches(built, 5)
  _assert_same(first, again)
  other, _ = _batches(built, 5, seed=1)
  assert not np.array_equal(first[0]["targets"], other[0]["targets"])


def test_batches_have_the_configured_shapes(built):
  for batch in _batches(built, 3)[0] + _batches(built, 3, train=False)[0]:
    assert {k: v.shape for k, v in batch.items()} == {
        k: (BATCH, SEQ_LEN) for k in ("inputs", "targets", "positions", "segment_ids",
                                      "weights", "target_bytes")}


def _segments(segment_ids):
  """(start, end) of each run of equal segment ids in a row."""
  edges = np.flatnonzero(np.diff(segment_ids)) + 1
  bounds = [0, *edges, len(segment_ids)]
  return list(zip(bounds[:-1], bounds[1:]))


def test_packed_rows_are_consistent(built):
  tok = built[2]
  batches = _batches(built, 20)[0] + _batches(built, 1000, train=False)[0]
  for batch in batches:
    for row in range(BATCH):
      seg, pos = batch["segment_ids"][row], batch["positions"][row]
      runs = _segments(seg)
      ids = [seg[s] for s, _ in runs]
      # Segments are numbered 1, 2, ... in order, each one contiguous; padding only at the end.
      real = [i for i in ids if i]
      assert real == list(range(1, len(real) + 1)), seg
      assert 0 not in ids[:len(real)], seg
      for s, e in runs:
        if seg[s]:
          np.testing.assert_array_equal(pos[s:e], np.arange(e - s))  # restart at 0
          assert batch["inputs"][row, s] == tok.bos_id
          np.testing.assert_array_equal(batch["inputs"][row, s + 1:e],
                                        batch["targets"][row, s:e - 1])
      np.testing.assert_array_equal(batch["weights"][row], seg > 0)


def test_unshuffled_stream_is_the_documents_in_order(built):
  # Packing neither drops, reorders nor interleaves tokens: the scored tokens of
  # the validation stream are each document's tokens + EOS, one after another.
  _, builder, tok = built
  docs = builder.as_data_source("validation")
  expected = np.concatenate([np.append(tok.encode(docs[i]["text"].decode()), tok.eos_id)
                             for i in range(len(docs))])
  batches, _ = _batches(built, 10_000, train=False)
  scored = np.concatenate([b["targets"][b["weights"] > 0] for b in batches])
  np.testing.assert_array_equal(scored, expected)


def test_restored_iterator_continues_with_the_same_batches(built):
  # Positions early in the first epoch, and just past it (the second epoch's shuffle).
  _, builder, tok = built
  docs = builder.as_data_source("train")
  tokens = sum(len(tok.encode(docs[i]["text"].decode())) + 1 for i in range(len(docs)))
  for k in (3, tokens // (BATCH * SEQ_LEN) + 2):
    _, it = _batches(built, k)
    # Through JSON, as grain's orbax handler writes and reads it in a checkpoint.
    state = json.loads(json.dumps(it.get_state()))
    expected = list(itertools.islice(it, 4))
    resumed, _ = _batches(built, 4, state=state)
    _assert_same(resumed, expected)
    assert not np.array_equal(resumed[0]["targets"], _batches(built, 1)[0][0]["targets"])


def test_rows_sharding_gives_every_host_its_block_of_the_same_global_batch(built):
  """With shard_by="rows" the global batch does not depend on the number of hosts."""
  _, builder, tok = built
  make = lambda index, count, batch: list(itertools.islice(input_pipeline.make_dataset(
      builder.as_data_source("train"), tok, objective=objectives.CausalLM(SEQ_LEN, tok.specials),
      batch_size=batch, seed=0, train=True, shard_index=index, shard_count=count,
      shard_by="rows"), 3))
  whole = make(0, 1, BATCH)
  halves = [make(i, 2, BATCH // 2) for i in range(2)]
  for step in range(3):
    for key in whole[step]:
      np.testing.assert_array_equal(
          np.concatenate([halves[0][step][key], halves[1][step][key]]), whole[step][key])
