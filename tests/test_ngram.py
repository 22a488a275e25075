"""The Kneser-Ney baseline: hand-computed values, the textbook recursion, normalised
distributions, and it beats the unigram on held-out text."""
from collections import Counter
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import tiny_config
from tools import baselines
from train import input_pipeline, ngram, objectives, sources, unigram
from train.tokenizer import Specials

BOS_ID = Specials.trained(640).bos_id  # the layout of a tokenizer trained here

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
A, B, C = 5, 6, 7  # text ids of the hand corpus; BOS is 3
V = 8


def hand_batch():
  """One packed row of two documents, "a b a b" and "a c", then two padding slots."""
  targets = np.array([A, B, A, B, A, C, 0, 0])
  segments = np.array([1, 1, 1, 1, 2, 2, 0, 0])
  positions = np.array([0, 1, 2, 3, 0, 1, 0, 0])
  row = objectives.causal_lm({"targets": targets, "targets_segment_ids": segments,
                              "targets_positions": positions}, BOS_ID)
  batch = {k: np.asarray(v)[None] for k, v in row.items()}
  batch["target_bytes"] = batch["weights"].astype(np.int32)  # one byte per scored token
  return batch


def test_windows_restart_at_each_segment():
  windows = ngram.windows(hand_batch(), order=3)
  np.testing.assert_array_equal(windows, [
      [-1, BOS_ID, A], [BOS_ID, A, B], [A, B, A], [B, A, B],  # "a b a b"
      [-1, BOS_ID, A], [BOS_ID, A, C]])  # "a c": its history never reaches the first document


def test_interpolated_kneser_ney_by_hand():
  """Bigram: (BOS a) 2, (a b) 2, (b a) 1, (a c) 1. Unigram continuation counts: a 2 (after
  BOS and b), b 1, c 1. One discount 0.5 everywhere."""
  counts = ngram.fit([hand_batch()], V, order=3, bos_id=BOS_ID)
  half = {k: (0.5, 0.5, 0.5) for k in (1, 2, 3)}
  bigram = ngram.KneserNey(counts, 2, fixed_discounts=half)
  # Unigrams: (a(w) - 0.5 + 3 * 0.5 / V) / 4.
  p1 = {A: (1.5 + 1.5 / 8) / 4, B: (0.5 + 1.5 / 8) / 4, C: (0.5 + 1.5 / 8) / 4}
  other = 1.5 / 8 / 4
  np.testing.assert_allclose(bigram.distribution([C]),  # an unseen context: the unigrams
                             [other] * 5 + [p1[A], p1[B], p1[C]], rtol=1e-12)
  # After a: (a b) 2, (a c) 1; total 3, backoff mass 2 * 0.5.
  expected = np.array([other] * 5 + [p1[A], 1.5 + p1[B], 0.5 + p1[C]]) / 3
  np.testing.assert_allclose(bigram.distribution([A]), expected, rtol=1e-12)
  np.testing.assert_allclose(bigram.distribution([BOS_ID])[A], (1.5 + 0.5 * p1[A]) / 2,
                             rtol=1e-12)
  # Trigram: (BOS a b) 1, (BOS a c) 1. At order 2 of a trigram model, (BOS a) keeps its
  # count 2 (it cannot extend left) and (a b) counts its left contexts {BOS, b}: 2.
  trigram = ngram.KneserNey(counts, 3, fixed_discounts=half)
  p2_b = (1.5 + p1[B]) / 3
  assert trigram.distribution([BOS_ID, A])[B] == pytest.approx((0.5 + p2_b) / 2, rel=1e-12)
  # In key order (BOS 3 < a 5 < b 6 < c 7): (BOS a), (a b), (a c), (b a).
  np.testing.assert_array_equal(counts.adjusted(2, top=3), [2, 2, 1, 1])


def _rows(docs, length):
  """A batch packing whole documents into rows of `length` (none split across rows)."""
  rows, row = [], []
  for doc in docs:
    if sum(map(len, row)) + len(doc) > length:
      rows.append(row)
      row = []
    row.append(doc)
  rows.append(row)
  batch = []
  for row in rows:
    targets = np.concatenate(row + [np.zeros(length - sum(map(len, row)), int)])
    segments = np.concatenate([np.full(len(d), i + 1) for i, d in enumerate(row)] +
                              [np.zeros(length - sum(map(len, row)), int)])
    batch.append(objectives.causal_lm({"targets": targets, "targets_segment_ids": segments,
                                       "targets_positions": np.zeros(length, int)}, BOS_ID))
  return {k: np.stack([b[k] for b in batch]) for k in batch[0]}


def _reference(docs, order, discounts):
  """p(w | history) by the textbook recursion over dicts of n-gram tuples, slowly."""
  raw = {k: Counter() for k in range(1, order + 1)}
  for doc in docs:
    history = [BOS_ID]
    for w in doc:
      for k in range(1, min(order, len(history) + 1) + 1):
        raw[k][tuple(history[len(history) - k + 1:]) + (w,)] += 1
      history.append(w)

  def adjusted(k, gram):
    if k == order or gram[0] == BOS_ID:
      return raw[k][gram]
    return sum(1 for longer in raw[k + 1] if longer[1:] == gram)

  def p(k, history, w):
    if k == 0:
      return 1 / V
    if len(history) < k - 1:
      return p(k - 1, history, w)
    context = tuple(history[len(history) - k + 1:])
    seen = {g: adjusted(k, g) for g in raw[k] if g[:-1] == context}
    lower = p(k - 1, history, w)
    if not seen:
      return lower
    discount = lambda c: discounts[k][min(c, 3) - 1]
    mass = sum(discount(c) for c in seen.values())
    count = seen.get(context + (w,), 0)
    return ((count - discount(count) if count else 0.0) + mass * lower) / sum(seen.values())

  return lambda history, w: p(order, list(history), w)


def test_matches_the_textbook_recursion_on_random_text():
  rng = np.random.default_rng(0)
  docs = lambda n: [rng.integers(A, V, rng.integers(1, 12)) for _ in range(n)]
  train, test = docs(60), docs(10)
  counts = ngram.fit([_rows(train, 16)], V, order=3, bos_id=BOS_ID)
  for order in (1, 2, 3):
    model = ngram.KneserNey(counts, order)
    reference = _reference([list(d) for d in train], order, model.discounts)
    batch = _rows(test, 16)
    got = model.probabilities(ngram.windows(batch, order))
    expected = [reference([BOS_ID] + list(doc[:i]), w) for doc in test for i, w in enumerate(doc)]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_modified_discounts_from_counts_of_counts():
  # n1 = 4, n2 = 2, n3 = 1, n4 = 1: Y = 0.5, D1 = 1 - 2Y n2/n1 = 0.5,
  # D2 = 2 - 3Y n3/n2 = 1.25, D3+ = 3 - 4Y n4/n3 = 1.
  adjusted = np.array([1, 1, 1, 1, 2, 2, 3, 4, 9])
  np.testing.assert_allclose(ngram.discounts_of(adjusted, "modified"), [0.5, 1.25, 1.0])
  np.testing.assert_allclose(ngram.discounts_of(adjusted, "plain"), [0.5] * 3)
  # Undefined (no n-gram seen twice): KenLM's fallback discounts.
  np.testing.assert_allclose(ngram.discounts_of(np.array([1, 1, 3]), "modified"),
                             ngram.FALLBACK_DISCOUNTS)


@pytest.fixture(scope="module")
def rows(built):
  """(train batches, validation batches, tokenizer) of the test corpus, as the models read it."""
  _, builder, tok = built
  def batches(split):
    return list(input_pipeline.make_dataset(
        builder.as_data_source(split), tok, objective=objectives.CausalLM(32, tok.specials), batch_size=8,
        seed=0, train=False))
  return batches("train"), batches("validation"), tok


@pytest.mark.parametrize("discounts", ngram.DISCOUNTS)
def test_every_context_gives_a_distribution_over_the_vocabulary(rows, discounts):
  train, _, tok = rows
  counts = ngram.fit(train, tok.vocab_size, order=4, bos_id=tok.bos_id)
  windows = ngram.windows(train[3], order=4)
  for order in (1, 2, 4):
    model = ngram.KneserNey(counts, order, discounts)
    # Seen contexts (from the training rows), a segment start, and an unseen one.
    for history in [list(windows[9, :3]), list(windows[20, :3]), [BOS_ID], [600, 601, 602]]:
      p = model.distribution([i for i in history if i >= 0])
      assert (p > 0).all()
      assert abs(p.sum() - 1.0) < 1e-9, (order, history, p.sum())


def test_higher_orders_beat_the_unigram_on_held_out_text(rows, built):
  train, validation, tok = rows
  _, builder, _ = built
  counts = ngram.fit(train, tok.vocab_size, order=3, bos_id=tok.bos_id)
  bpb = {k: ngram.bits_per_byte(ngram.KneserNey(counts, k), validation) for k in (1, 2, 3)}
  add_one = unigram.bits_per_byte(
      unigram.fit(sources.sample_texts(builder.as_data_source("train"), 10**9), tok), validation)
  assert bpb[3] < bpb[2] < bpb[1], bpb
  assert bpb[2] < 0.9 * add_one, (bpb, add_one)
  # Order 1 is a smoothed unigram of the same counts: within a few percent of add-one.
  assert bpb[1] == pytest.approx(add_one, rel=0.05)


def test_baselines_tool_scores_every_order_on_the_model_rows(text_dir, data_dir):
  config = tiny_config(text_dir, data_dir)
  rows = baselines.baselines(config, order=3)
  assert [(r["baseline"], r["order"]) for r in rows] == [
      ("unigram (add-one)", 1), ("kneser-ney", 1), ("kneser-ney", 2), ("kneser-ney", 3)]
  assert rows[3]["bits_per_byte"] < rows[2]["bits_per_byte"] < rows[0]["bits_per_byte"]
  # --matched_budget: exactly the tokens a run of the config trains on.
  matched = baselines.baselines(config, order=2, matched_budget=True)
  t = config.train
  assert matched[1]["train_tokens"] == t.num_steps * t.batch_size * config.data.seq_len
  assert matched[1]["train_tokens"] < rows[1]["train_tokens"]


def test_baselines_command_line(text_dir, data_dir):
  data = tiny_config(text_dir, data_dir).data
  flags = [f"--config.data.{k}={data[k]}" for k in (
      "source", "data_dir", "validation_percent", "vocab_size", "tokenizer_sentences")]
  run = lambda *args: subprocess.run(
      [sys.executable, "-m", "tools.baselines", "--config=configs/gpt_tiny.py", *flags, *args],
      capture_output=True, text=True, cwd=ROOT)
  ok = run("--order=2")
  assert ok.returncode == 0, ok.stderr[-2000:]
  lines = ok.stdout.splitlines()
  assert lines[0] == "| baseline | order | train_tokens | bits_per_byte | seconds |"
  assert len(lines) == 2 + 3 and lines[-1].startswith("| kneser-ney | 2 |")
  bad = run("--order=0")
  assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1] == (
      "error: --order=0 must be at least 1")
