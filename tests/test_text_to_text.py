"""Text-to-text and prompt-completion tuning: target-only loss, packed rows that keep each
example's mask, generation scored against references, and bad inputs stopped in one line."""
import importlib
import json

import numpy as np
import pytest

from configs import common
from tests.conftest import tiny_config
from train import corpus, task_data, text_metrics, trainer, unigram
from train.experiment import Experiment


def _config(text_dir, data_dir, name="gpt_tiny", data="stdlib_function_name"):
  config = tiny_config(text_dir, data_dir, name)
  config.task.name, config.task.data, config.task.target_len = "text_to_text", data, 8
  config.sample.num_prompts = 0
  return config


def test_a_decoder_row_scores_its_target_and_reads_its_input_as_the_prefix(built, text_dir,
                                                                           data_dir):
  tok = built[2]
  task = Experiment(_config(text_dir, data_dir)).task
  example = {"input": "return x + 1", "target": "increment"}
  source, target = tok.encode(example["input"]), tok.encode(example["target"])
  row = task.encode(example, tok)
  used = 1 + len(source) + 1 + len(target) + 1  # BOS input EOS target EOS
  given = len(source) + 1
  np.testing.assert_array_equal(row["targets"][:used - 1],
                                np.concatenate([source, [tok.eos_id], target, [tok.eos_id]]))
  np.testing.assert_array_equal(row["inputs"][:used - 1],
                                np.concatenate([[tok.bos_id], source, [tok.eos_id], target]))
  # The loss: the target and its EOS only; the prefix: BOS, the input and its EOS.
  np.testing.assert_array_equal(np.flatnonzero(row["weights"]),
                                np.arange(given, given + len(target) + 1))
  np.testing.assert_array_equal(np.flatnonzero(row["prefix"]), np.arange(given + 1))
  np.testing.assert_array_equal(task.prompt(example, tok)[:given + 1], row["inputs"][:given + 1])


def test_packed_rows_hold_whole_examples_each_with_its_own_mask(built, text_dir, data_dir,
                                                                 tmp_path):
  tok = built[2]
  short = [{"prompt": f"add {a} and {b}", "completion": str(a + b)}
           for a in range(10) for b in range(1, 10, a + 1)]
  config = _config(text_dir, data_dir, data=_write(tmp_path / "train.jsonl", short))
  _write(tmp_path / "validation.jsonl", short[:3])
  config.data.seq_len, config.task.target_len = 24, 8
  task = Experiment(config).task
  alone = {tuple(task.encode(e, tok, pad=False)["targets"]): task.encode(e, tok, pad=False)
           for e in task.examples("train")}
  batch = next(iter(task.dataset(None, tok, train=True)))
  segments_per_row = []
  for r in range(config.train.batch_size):
    row = {k: v[r] for k, v in batch.items()}
    ids = [s for s in np.unique(row["segment_ids"]) if s]
    segments_per_row.append(len(ids))
    for s in ids:
      where = np.flatnonzero(row["segment_ids"] == s)
      np.testing.assert_array_equal(where, np.arange(where[0], where[0] + len(where)))
      np.testing.assert_array_equal(row["positions"][where], np.arange(len(where)))
      # Each packed segment is one example exactly as it is alone: tokens, mask, prefix.
      own = alone[tuple(row["targets"][where])]
      for field in ("inputs", "weights", "prefix"):
        np.testing.assert_array_equal(row[field][where], own[field])
    assert not row["weights"][row["segment_ids"] == 0].any()
  assert min(segments_per_row) > 1  # rows of 32 hold several of these short examples


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gpt_tiny", "t5_tiny"])
def test_text_to_text_trains_and_scores_its_greedy_outputs(built, text_dir, data_dir, tmp_path,
                                                          name):
  config = _config(text_dir, data_dir, name)
  config.train.num_steps, config.train.eval_every = 4, 4
  config.task.generate_examples = 5  # all of them among the summary's samples
  # The encoder-decoder decodes without repeating a trigram (tests/test_decoding.py checks it).
  config.task.no_repeat_ngram = 3 if name == "t5_tiny" else 0
  summary = trainer.train(config, str(tmp_path / "run"))
  samples = summary["samples"]
  assert summary["generated_examples"] == len(samples) == 5
  expected = text_metrics.scores([s["output"] for s in samples], [s["target"] for s in samples])
  # The baseline that copies the input's last line, cut to the target's room as a reference is.
  tok = built[2]
  last_lines = [tok.decode(tok.encode(s["input"].rstrip().split("\n")[-1].strip())[:7])
                for s in samples]
  copied = text_metrics.scores(last_lines, [s["target"] for s in samples])
  for metric in text_metrics.METRICS:
    assert summary[metric] == pytest.approx(expected[metric], rel=1e-12)
    assert summary[f"last_line_{metric}"] == pytest.approx(copied[metric], rel=1e-12)
    assert 0 <= summary[f"copy_{metric}"] <= 100
  assert summary["final_loss"] < summary["initial_loss"]
  assert 0 < summary["unigram_loss"] < summary["initial_loss"]
  validation = task_data.load_pairs("stdlib_function_name")["validation"]
  assert [s["input"] for s in samples] == [e["input"] for e in validation[:5]]


def test_next_line_examples_continue_functions_of_files_pretraining_never_read():
  """Each example is a function's signature and first code lines, and its next non-blank
  line; validation functions come only from the files the corpus holds out (its default 5%)."""
  seen = {split: set() for split in task_data.SPLITS}
  for function in task_data._functions(""):
    code = function.rest.split("\n")
    split = ("validation" if corpus.is_validation(function.module, 5) else "train")
    seen[split].update(("\n".join([function.head, *code[:k]]), code[k].strip())
                       for k in range(min(len(code), 6)) if code[k].strip())
  examples = task_data.load_pairs("stdlib_next_line")
  assert len(examples["validation"]) >= 300 and len(examples["train"]) >= 2000
  for split, pairs in examples.items():
    assert len({e["input"] for e in pairs}) > 0.9 * len(pairs)  # one line per function
    for e in pairs:
      assert (e["input"], e["target"]) in seen[split], e


@pytest.mark.parametrize("unseen, seen, make", [
    ("stdlib_unseen_function_name", "stdlib_function_name", task_data._function_name),
    ("stdlib_unseen_swapped_lines", "stdlib_swapped_lines", task_data._swapped_lines)])
def test_unseen_tasks_validate_on_files_pretraining_never_read(unseen, seen, make):
  """Validation: examples of the functions of the files the corpus holds out, none of them
  trained on; training: the seen task's train split without those functions' examples."""
  load = lambda name: (task_data.load_pairs(name) if name in task_data.BUILTIN_PAIRS
                       else task_data.load(name, ()))
  text = lambda e: e.get("input", e.get("text"))
  held_out = [make(f) for f in task_data._functions("") if corpus.is_validation(f.module, 5)]
  held_out_texts = {text(e) for e in held_out}
  examples = load(unseen)
  train_texts = {text(e) for e in examples["train"]}
  assert examples["train"] == [e for e in load(seen)["train"] if text(e) not in held_out_texts]
  assert len(examples["validation"]) >= 300
  assert len({text(e) for e in examples["validation"]}) == len(examples["validation"])
  for e in examples["validation"]:
    assert e in held_out and text(e) not in train_texts, e


def test_text_metrics_are_those_of_sacrebleu_and_rouge_score():
  import sacrebleu
  from rouge_score import rouge_scorer
  predictions, references = ["def f(x): return x", "open file"], ["def f(x): return x", "close"]
  got = text_metrics.scores(predictions, references)
  assert got["exact_match"] == 50.0
  assert got["bleu"] == sacrebleu.corpus_bleu(predictions, [references]).score
  assert got["chrf"] == sacrebleu.corpus_chrf(predictions, [references]).score
  rouge = rouge_scorer.RougeScorer(["rougeL"])
  assert got["rouge_l"] == pytest.approx(50.0 * (1.0 + rouge.score("close", "open file")[
      "rougeL"].fmeasure))


def _write(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
  return str(path).replace("train", "{split}")


@pytest.mark.parametrize("edit, message", [
    (lambda c, d: setattr(c.task, "data", _write(d / "train.jsonl", [{"question": "a"}])),
     r"has fields \['question'\]; a text-to-text task reads input and target"),
    (lambda c, d: setattr(c.task, "data", _write(d / "train.jsonl", [])),
     r"train.jsonl holds no examples"),
    (lambda c, d: setattr(c.task, "data", "stdlib_functions"),
     r"neither a built-in task"),
    (lambda c, d: (c.model.update(family="encoder"), c.update(objective="mlm")),
     r"does not fit config.model.family='encoder': it does not generate text"),
    (lambda c, d: (c.task.update(target_len=60), c.model.update(position="learned")),
     r"rows of 92 tokens .* exceed config.model.max_length=64")])
def test_bad_text_to_text_inputs_fail_in_one_line(text_dir, data_dir, tmp_path, edit, message):
  config = _config(text_dir, data_dir, data=_write(
      tmp_path / "train.jsonl", [{"prompt": "say hi", "completion": "hi"}]))
  _write(tmp_path / "validation.jsonl", [{"prompt": "say yo", "completion": "yo"}])
  edit(config, tmp_path)
  with pytest.raises(ValueError, match=message) as error:
    Experiment(config)
  assert "\n" not in str(error.value)


@pytest.mark.parametrize("name, arg", [("gpt_finetune", "body,lora"), ("t5_finetune", "name"),
                                       ("bert_finetune", "package,lora")])
def test_each_family_s_finetune_config_builds_its_task(name, arg):
  config = importlib.import_module(f"configs.{name}").get_config(arg)
  experiment = Experiment(config)
  assert experiment.task.config.task.data == common.FINETUNING_TASKS[arg.split(",")[0]][1]
  assert ("lora" in arg) == bool(config.model.lora_rank)


def test_a_finetune_config_argument_names_what_it_accepts():
  with pytest.raises(ValueError, match=r"'nmae': give at most one task of \['body', 'name'"):
    common.finetuning(common.base_config(), "nmae")


def test_a_classification_task_as_text_to_text_writes_its_class_names():
  classes = task_data.BUILTIN["stdlib_swapped_lines"][0]
  labelled = task_data.load("stdlib_swapped_lines", classes)["validation"]
  pairs = task_data.load_pairs("stdlib_swapped_lines")["validation"]
  assert pairs == [{"input": e["text"], "target": classes[e["label"]]} for e in labelled]


def test_the_unigram_baseline_counts_each_sequence_and_its_eos():
  # Vocabulary of 4, EOS 3: add-one counts 1 + [0, 2, 1, 0] + 2 EOS = [1, 3, 2, 3] of 9.
  log2_probs = unigram.fit_ids([np.array([1, 1]), np.array([2])], vocab_size=4, eos_id=3)
  np.testing.assert_allclose(2 ** log2_probs, np.array([1, 3, 2, 3]) / 9)
