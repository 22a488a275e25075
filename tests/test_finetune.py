"""Fine-tuning: starting from another run's parameters, and freezing some of them."""
import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from sklearn import metrics

from flax import nnx

from model import abstract_model, lora
from tests.conftest import tiny_config
from train import evaluation, init_from, pretrained, trainer
from train.experiment import Experiment
from train.init_from import InitFrom


def _batch(config):
  rows = (config.train.batch_size, config.data.seq_len)
  ids = np.arange(rows[0] * rows[1], dtype=np.int32).reshape(rows) % 97 + 5
  return {"inputs": ids, "targets": np.roll(ids, -1, axis=1), "weights": np.ones(rows, np.float32),
          "segment_ids": np.ones(rows, np.int32), "target_bytes": np.ones(rows, np.int32),
          "positions": np.broadcast_to(np.arange(rows[1], dtype=np.int32), rows)}


def _array_bytes(tree) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def test_frozen_parameters_stay_bitwise_and_keep_no_optimizer_state(text_dir, data_dir):
  config = tiny_config(text_dir, data_dir)
  config.train.frozen = "embed,stack/layers/0/"
  experiment = Experiment(config)
  state = before = experiment.create_state()
  before = jax.tree.map(np.asarray, before.params)
  step = experiment.jit_train_step()
  for _ in range(3):
    state, metrics = step(state, _batch(config))
  after = init_from.param_paths(jax.tree.map(np.asarray, state.params))
  frozen = {k for k in after if k.startswith(("embed/", "stack/layers/0/"))}
  assert frozen and len(frozen) < len(after)
  for name, value in init_from.param_paths(before).items():
    if name in frozen:
      np.testing.assert_array_equal(value, after[name], err_msg=name)
    else:
      assert not np.array_equal(value, after[name]), name
  # Adam's two moments of every trainable parameter, and nothing of the frozen ones;
  # the only other arrays are the scalar step counters.
  trainable_bytes = sum(v.nbytes for k, v in after.items() if k not in frozen)
  moments = [x for x in jax.tree.leaves(state.opt_state) if x.ndim]
  assert sum(x.nbytes for x in moments) == 2 * trainable_bytes
  assert _array_bytes(state.opt_state) - 2 * trainable_bytes < 64


@pytest.mark.parametrize("field, pattern, message", [
    ("frozen", "no_such_layer", r"config.train.frozen: 'no_such_layer' matches no parameter"),
    ("trainable", "head(", r"config.train.trainable: 'head\(' is not a regex"),
    ("frozen", ".", "leave no parameter to train")])
def test_a_freeze_pattern_that_matches_nothing_fails_in_one_line(text_dir, data_dir, field,
                                                                 pattern, message):
  config = tiny_config(text_dir, data_dir)
  config.train[field] = pattern
  with pytest.raises(ValueError, match=message) as error:
    Experiment(config)
  assert "\n" not in str(error.value)


def test_init_from_a_converted_directory_loads_matching_names(text_dir, data_dir, tmp_path):
  """An encoder saved without token types: the new model's token-type table starts fresh."""
  source = tiny_config(text_dir, data_dir, "bert_tiny")
  saved = saved_tree = Experiment(source).create_state(seed=7).params
  pretrained.save_params(str(tmp_path / "converted"), source, saved)
  config = tiny_config(text_dir, data_dir, "bert_tiny")
  config.model.num_token_types = 2
  experiment = Experiment(config)
  plan = InitFrom.check(str(tmp_path / "converted"), experiment.abstract_params)
  assert plan.new == ("token_types/table",) and plan.left_out == ()
  fresh = fresh_tree = experiment.create_state(seed=0).params
  loaded = init_from.param_paths(plan.restore(fresh, experiment.state_shardings.params))
  saved, fresh = init_from.param_paths(saved), init_from.param_paths(fresh)
  for name, value in loaded.items():
    np.testing.assert_array_equal(value, saved.get(name, fresh[name]), err_msg=name)
    assert value.sharding == init_from.param_paths(experiment.state_shardings.params)[name]

  # A workdir's checkpoint as the trainer lays it out (checkpoints/<step>/state).
  saver = ocp.StandardCheckpointer()
  saver.save(str(tmp_path / "run" / "checkpoints" / "2" / "state"),
             {"step": jax.numpy.int32(2), "params": saved_tree})
  saver.wait_until_finished()
  plan = InitFrom.check(str(tmp_path / "run"), experiment.abstract_params)
  assert plan.under == ("params",) and plan.new == ("token_types/table",)
  loaded = init_from.param_paths(plan.restore(fresh_tree, experiment.state_shardings.params))
  for name, value in saved.items():
    np.testing.assert_array_equal(loaded[name], value, err_msg=name)
  # The same checkpoint read as a pretrained directory (tools.convert_hf export, generate).
  shutil.copy(tmp_path / "converted" / "config.json", tmp_path / "run" / "config.json")
  read_back = init_from.param_paths(pretrained.load_params(str(tmp_path / "run"))[1])
  assert read_back.keys() == saved.keys()
  for name, value in saved.items():
    np.testing.assert_array_equal(read_back[name], value, err_msg=name)

  config.model.num_token_types, config.model.mlp_dim = 0, 48
  with pytest.raises(ValueError, match=r"parameter stack/layers/0/mlp/wi/bias has shape \(64,\) "
                                       r"there but \(48,\)"):
    InitFrom.check(str(tmp_path / "converted"), Experiment(config).abstract_params)
  with pytest.raises(ValueError, match="config.init_from='/nowhere' does not exist"):
    InitFrom.check("/nowhere", experiment.abstract_params)
  with pytest.raises(ValueError, match="holds neither params/"):
    InitFrom.check(str(tmp_path), experiment.abstract_params)
  # Layers saved one by one, read by a model that scans them (or the reverse): none would load.
  config.model.num_token_types, config.model.mlp_dim, config.model.scan_layers = 0, 64, True
  with pytest.raises(ValueError, match=r"holds its layers one by one and this model scans them, "
                                       r"so no layer would load; set "
                                       r"--config.model.scan_layers=False"):
    InitFrom.check(str(tmp_path / "converted"), Experiment(config).abstract_params)
  # Rotary positions saved, a learned table wanted: the layers would load and misread positions.
  config.model.scan_layers, config.model.position = False, "learned"
  with pytest.raises(ValueError, match=r"encodes positions with no position parameters \(rotary "
                                       r"or sinusoidal\) and this model with a learned position "
                                       r"table; set --config.model.position"):
    InitFrom.check(str(tmp_path / "converted"), Experiment(config).abstract_params)


def _saved_params(workdir, step):
  state = ocp.PyTreeCheckpointer().restore(os.path.join(workdir, "checkpoints", str(step),
                                                        "state"))
  return init_from.param_paths(jax.tree.map(np.asarray, state["params"]))


def _lora_config(text_dir, data_dir, name="gpt_tiny"):
  config = tiny_config(text_dir, data_dir, name)
  config.model.lora_rank, config.model.lora_alpha = 4, 8.0
  config.model.lora_targets = "query,value,wo"
  return config


def test_lora_adds_exactly_its_adapters_and_merges_into_the_same_logits(text_dir, data_dir):
  config = _lora_config(text_dir, data_dir)
  plain = tiny_config(text_dir, data_dir)
  lora_experiment, plain_experiment = Experiment(config), Experiment(plain)
  # Per layer (width 32, 2 heads of 16, MLP 64, rank 4): query and value A [32, 4] +
  # B [4, 2, 16], wo A [64, 4] + B [4, 32]; 2 layers.
  assert lora_experiment.num_params - plain_experiment.num_params == 2 * (
      2 * (32 * 4 + 4 * 2 * 16) + (64 * 4 + 4 * 32))
  # The adapters carry their kernel's logical axes on the dimensions they share with it.
  specs = {k: tuple(v) for k, v in init_from.param_paths(nnx.to_pure_dict(
      nnx.get_partition_spec(nnx.state(abstract_model(lora_experiment.model_cfg),
                                       nnx.Param)))).items()}
  layer = "stack/layers/0/"
  assert specs[layer + "self_attn/query_lora/a"] == ("embed", None)
  assert specs[layer + "self_attn/query_lora/b"] == (None, "heads", "head_dim")
  assert specs[layer + "mlp/wo/lora/a"] == ("mlp", None)
  assert specs[layer + "mlp/wo/lora/b"] == (None, "embed")
  assert specs[layer + "self_attn/query"] == ("embed", "heads", "head_dim")
  params = lora_experiment.create_state().params
  # B starts at zero (the adapted model is its base); give it values to test the merge.
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: (jax.random.normal(jax.random.key(len(str(path))), x.shape) * 0.05
                       if init_from.path_key(path).endswith("/b") else x), params)
  batch = _batch(config)
  inputs = (batch["inputs"], batch["positions"], batch["segment_ids"])
  adapted = nnx.merge(lora_experiment.graphdef, params)(*inputs)
  merged = lora.merged(params, scale=8.0 / 4)
  assert init_from.param_paths(merged).keys() == init_from.param_paths(
      plain_experiment.abstract_params).keys()
  base = nnx.merge(plain_experiment.graphdef, params_without_adapters(params))(*inputs)
  assert float(np.abs(np.asarray(adapted) - np.asarray(base)).max()) > 1e-2  # adapters matter
  # fp32 throughout; x W + s (x A) B and x (W + s A B) differ only in rounding (~1e-6 of
  # logits of size ~1).
  np.testing.assert_allclose(nnx.merge(plain_experiment.graphdef, merged)(*inputs), adapted,
                             atol=2e-5, rtol=1e-5)


def params_without_adapters(params):
  return lora.merged(params, scale=0.0)


def test_a_lora_target_the_model_lacks_fails_in_one_line(text_dir, data_dir):
  config = _lora_config(text_dir, data_dir)
  config.model.lora_targets = "query,wi_linear"
  with pytest.raises(ValueError, match="lora_targets: 'wi_linear' matches no kernel"):
    Experiment(config)
  config.model.lora_targets = "q_proj"
  with pytest.raises(ValueError, match=r"config.model.lora_targets='q_proj' must name kernels"):
    Experiment(config)


def _classifier_config(text_dir, data_dir, name="gpt_tiny", data="stdlib_package", classes=6):
  config = tiny_config(text_dir, data_dir, name)
  config.task.name, config.task.data, config.model.num_classes = "classification", data, classes
  config.sample.num_prompts = 0
  return config


def test_classification_metrics_from_the_step_equal_scikit_learn(built, text_dir, data_dir):
  config = _classifier_config(text_dir, data_dir)
  config.train.batch_size = 16
  experiment = Experiment(config)
  task, (_, _, tok) = experiment.task, built
  params = experiment.create_state().params
  batches = task.dataset(None, tok, train=False)[:6]
  sums = evaluation.evaluate(experiment.jit_eval_step(), params, batches,
                             experiment.batch_sharding, task.SUMS)
  model = nnx.merge(experiment.graphdef, params)
  labels, predicted = [], []
  for batch in batches:
    # [B, T, D]; a decoder classifies from each row's last real token
    hidden = np.asarray(model.hidden(batch["inputs"], batch["positions"], batch["segment_ids"]))
    last = (batch["segment_ids"] > 0).sum(1) - 1
    logits = np.asarray(model.classifier(hidden[np.arange(len(last)), last]))
    real = batch["weight"][:, 0] > 0
    labels += list(batch["label"][real, 0])
    predicted += list(logits[real].argmax(-1))
  result = task.summarize(sums)
  assert sums["examples"] == len(labels) == 96
  assert result["accuracy"] == pytest.approx(metrics.accuracy_score(labels, predicted))
  assert result["macro_f1"] == pytest.approx(metrics.f1_score(
      labels, predicted, average="macro", labels=range(6), zero_division=0))


def test_pairs_mark_the_second_text_and_an_encoder_decoder_reads_them_in_its_encoder(
    built, text_dir, data_dir):
  _, _, tok = built
  example = {"text": "def f(x): return x", "text_b": "def g(y): return y", "label": 1}
  bert = _classifier_config(text_dir, data_dir, "bert_tiny", "stdlib_same_module", 2)
  bert.model.num_token_types = 2
  row = Experiment(bert).task.encode(example, tok)
  a, b = len(tok.encode(example["text"])), len(tok.encode(example["text_b"]))
  assert row["inputs"][0] == tok.bos_id and row["inputs"][a + 1] == tok.eos_id
  assert list(row["token_types"][:a + b + 2]) == [0] * (a + 2) + [1] * b
  assert row["segment_ids"].sum() == a + b + 2 and row["token_types"][a + b + 2:].sum() == 0
  t5 = Experiment(_classifier_config(text_dir, data_dir, "t5_tiny", "stdlib_same_module", 2))
  row = t5.task.encode(example, tok)
  assert row["encoder_segment_ids"].sum() == a + b + 2 and "token_types" not in row
  assert list(row["inputs"]) == [tok.pad_id] and row["label"][0] == 1


def test_encoder_mean_pooling_classifies_from_the_encoders_average_state(built, text_dir,
                                                                         data_dir):
  config = _classifier_config(text_dir, data_dir, "t5_tiny", "stdlib_package", 6)
  config.task.pooling = "encoder_mean"
  experiment = Experiment(config)
  params = experiment.create_state().params
  batch = experiment.task.dataset(None, built[2], train=False)[0]
  model = nnx.merge(experiment.graphdef, params)
  # [B, S, D]
  encoded = np.asarray(model.encode(batch["encoder_inputs"], batch["encoder_positions"],
                                    batch["encoder_segment_ids"]))
  real = batch["encoder_segment_ids"] > 0
  pooled = np.stack([states[keep].mean(0) for states, keep in zip(encoded, real)])
  log_probs = jax.nn.log_softmax(np.asarray(model.classifier(pooled)))
  labels, weights = batch["label"][:, 0], batch["weight"][:, 0]
  expected = -(log_probs[np.arange(len(labels)), labels] * weights).sum()
  # One float32 sum over the same values in another order: within a few ulps of ~100.
  assert float(experiment.task.metric_sums(model, batch)["nll"]) == pytest.approx(
      float(expected), rel=1e-5)


def _write(path, text):
  path.write_text(text, encoding="utf-8")
  return str(path).replace("train", "{split}")


@pytest.mark.parametrize("edit, message", [
    (lambda c, d: setattr(c.task, "data", _write(d / "train.jsonl", '{"text": "a", "label": '
                                                 '"maybe"}\n')),
     r"example 1 has label 'maybe', not one of config.task.classes='no,yes'"),
    (lambda c, d: setattr(c.task, "data", _write(d / "train.tsv", "")),
     r"train.tsv holds no examples"),
    (lambda c, d: setattr(c.task, "data", str(d / "none_{split}.jsonl")),
     r"none_train.jsonl does not exist"),
    (lambda c, d: setattr(c.model, "num_classes", 3),
     r"config.model.num_classes=3 must be 2"),
    (lambda c, d: setattr(c.task, "name", "translation"),
     r"config.task.name='translation' is not one of"),
    (lambda c, d: c.model.update(family="lstm", num_heads=1),
     r"does not fit config.model.family='lstm'"),
    (lambda c, d: setattr(c.task, "pooling", "encoder_mean"),
     r"pooling='encoder_mean' needs an encoder-decoder; config.model.family='decoder'")])
def test_bad_task_inputs_fail_in_one_line(text_dir, data_dir, tmp_path, edit, message):
  config = _classifier_config(text_dir, data_dir, data=_write(
      tmp_path / "train.jsonl", '{"text": "a", "label": "yes"}\n'), classes=2)
  (tmp_path / "validation.jsonl").write_text('{"text": "b", "label": "no"}\n')
  config.task.classes = "no,yes"
  edit(config, tmp_path)
  with pytest.raises(ValueError, match=message) as error:
    Experiment(config)
  assert "\n" not in str(error.value)


@pytest.mark.slow
def test_a_model_converted_from_huggingface_fine_tunes_end_to_end(built, text_dir, data_dir,
                                                                  tmp_path):
  """Random HF BERT weights of the test tokenizer's vocabulary (our SentencePiece model:
  HF tokenizer files are not read here), imported, then fine-tuned on sentence pairs
  with their segment embeddings."""
  transformers = pytest.importorskip("transformers")
  from tools import convert_hf
  hf_dir, ours = str(tmp_path / "hf"), str(tmp_path / "ours")
  transformers.BertForMaskedLM(transformers.BertConfig(
      vocab_size=built[2].vocab_size, hidden_size=32, num_hidden_layers=1,
      num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)).save_pretrained(
          hf_dir, safe_serialization=True)
  convert_hf.import_hf(hf_dir, ours)
  config = pretrained.load_config(ours)
  base = _classifier_config(text_dir, data_dir, "bert_tiny", "stdlib_same_module", 2)
  for section in ("data", "train", "optim", "task", "sample"):
    config[section] = base[section]
  config.model.num_classes, config.init_from = 2, ours
  config.train.num_steps, config.train.eval_batches, config.train.frozen = 4, 2, "embed/"
  tuned = str(tmp_path / "tuned")
  assert trainer.train(config, tuned)["step"] == 4
  converted, params = _params_of(ours), _saved_params(tuned, 4)
  assert set(params) - set(converted) == {"classifier/dense/bias", "classifier/dense/kernel"}
  np.testing.assert_array_equal(params["embed/table"], converted["embed/table"])  # frozen
  assert not np.array_equal(params["token_types/table"], converted["token_types/table"])
  # Resuming reads the run's own checkpoint and never init_from (gone by now).
  shutil.rmtree(ours)
  shutil.rmtree(os.path.join(tuned, "checkpoints", "4"))
  assert trainer.train(config, tuned)["step"] == 4


def _params_of(directory):
  return init_from.param_paths(jax.tree.map(np.asarray, pretrained.load_params(directory)[1]))


def test_lora_exported_to_peft_gives_our_logits_in_transformers(text_dir, data_dir, tmp_path):
  peft = pytest.importorskip("peft")
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  from tools import convert_hf, export_lora
  config = _lora_config(text_dir, data_dir, "bert_tiny")
  # What HF's BERT is: post-norm, segment embeddings, learned positions, erf GELU;
  # heads x head_dim = width.
  config.model.update(norm_position="post", num_token_types=2, position="learned",
                      lora_targets="query,value,wo")
  experiment = Experiment(config)
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: (jax.random.normal(jax.random.key(len(str(path))), x.shape) * 0.05
                       if init_from.path_key(path).endswith("/b") else x),
      experiment.create_state().params)
  base_config = tiny_config(text_dir, data_dir, "bert_tiny")
  base_config.model.update(norm_position="post", num_token_types=2, position="learned")
  pretrained.save_params(str(tmp_path / "base"), base_config, params_without_adapters(params))
  convert_hf.export_hf(str(tmp_path / "base"), str(tmp_path / "hf"))
  export_lora.write_peft(str(tmp_path / "peft"), experiment.model_cfg, params)
  hf_model = transformers.BertForMaskedLM.from_pretrained(str(tmp_path / "hf")).eval()
  ids = np.random.default_rng(0).integers(5, 600, (2, 12)).astype(np.int32)
  with torch.no_grad():
    base = hf_model(input_ids=torch.tensor(ids).long()).logits.numpy()
    adapted_hf = peft.PeftModel.from_pretrained(hf_model, str(tmp_path / "peft")).eval()
    theirs = adapted_hf(input_ids=torch.tensor(ids).long()).logits.numpy()
  rows = np.ones_like(ids)
  ours = np.asarray(nnx.merge(experiment.graphdef, params)(
      ids, np.broadcast_to(np.arange(12, dtype=np.int32), ids.shape), rows))
  assert float(np.abs(theirs - base).max()) > 1e-2  # the adapters were loaded, and matter
  # fp32 on both sides, different summation orders (torch vs XLA): ~1e-5 on logits of ~1.
  np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=1e-4)


def test_swapped_lines_differ_from_their_function_by_one_neighbouring_swap():
  from train import task_data
  originals = {f.text for p in task_data.STDLIB_PACKAGES for f in task_data._functions(p)}
  examples = task_data.load("stdlib_swapped_lines", ("swapped", "as_written"))["validation"]
  swapped = [e["text"] for e in examples if e["label"] == 0]
  assert 0.4 < len(swapped) / len(examples) < 0.6
  assert all(e["text"] in originals for e in examples if e["label"] == 1)
  by_lines = {tuple(sorted(t.split("\n"))): t for t in originals}
  for text in swapped:
    lines, original = text.split("\n"), by_lines[tuple(sorted(text.split("\n")))].split("\n")
    changed = [i for i, (a, b) in enumerate(zip(lines, original)) if a != b]
    assert len(changed) == 2 and changed[1] == changed[0] + 1 < 6
    assert lines[changed[0]] == original[changed[1]]
