"""tools/convert_hf.py against transformers: logits, round trips, published sizes, the CLI.

transformers and torch (the `convert` extra, part of `dev`) only build the
reference models here; the converter itself reads and writes numpy.
"""
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers
from flax import nnx

from configs.common import apply_variant, base_config
from model import build_model, count_params, decoder, encoder, encoder_decoder, model_config
from tools import convert_hf
from train import pretrained

transformers.logging.disable_progress_bar()

VOCAB, BATCH, LENGTH = 99, 2, 12
# Two float32 runs of one torch model on the same weights and input need not agree bit for
# bit: its CPU kernels split sums over the threads free at the time, so they add up in other
# orders. Two orders of a sum of K terms differ by up to 2 * K * 2**-24 of the terms'
# magnitudes: 4e-6 for most sums here (K = 32, the width), 1.5e-5 for the widest (GPT-2's
# K = 128); a logit lies some 15 such sums (projections, attention, norms) past the
# embeddings, so runs can differ by ~1e-4 of the logits' scale at worst (fp32 and fp64 runs
# of these models differ by < 1e-6 of it). Of the scale, not of each logit: a logit near 0
# is a sum of terms as large as the others'.
LOGITS_TOLERANCE = 1e-4
MODELS = ("bert", "gpt2", "t5_v1_0", "t5_v1_1")
CLASSES = {"bert": transformers.BertForMaskedLM, "gpt2": transformers.GPT2LMHeadModel,
           "t5_v1_0": transformers.T5ForConditionalGeneration,
           "t5_v1_1": transformers.T5ForConditionalGeneration}


ABSENT = "<absent>"
# Where an export's config.json may say otherwise than its source's (as transformers 5 writes
# these), key -> (source's value, export's); every other key it writes holds the source's value.
CONFIG_CHANGES = {
    "bert": {
        "attention_probs_dropout_prob": (0.1, 0.0),  # triform has no attention dropout
        # Read by transformers 4 (its default "absolute"); 5 dropped the option, never saves it.
        "position_embedding_type": (ABSENT, "absolute")},
    "gpt2": {
        "attn_pdrop": (0.1, 0.0),  # triform has no attention dropout
        "n_inner": (None, 128)},  # None means 4 * n_embd; the export writes what that comes to
    "t5_v1_0": {
        # Without it T5's _shift_right (labels -> decoder inputs) fails; HF T5 starts with pad.
        "decoder_start_token_id": (ABSENT, 0)},
    "t5_v1_1": {
        "decoder_start_token_id": (ABSENT, 0),
        # transformers 5 saves every T5 tied and marks v1.1 by scale_decoder_outputs false;
        # it reads tie_word_embeddings false as that (and 4 as untied, not rescaled).
        "tie_word_embeddings": (True, False)},
}
# Keys of the source's config.json an export leaves out. The metadata aside (the tensors
# carry their dtype), transformers must fill each in with the source's value.
CONFIG_METADATA = {"dtype", "transformers_version"}
CONFIG_OMITTED = {
    "bert": {"add_cross_attention", "classifier_dropout", "initializer_range", "is_decoder",
             "use_cache"},
    "gpt2": {"add_cross_attention", "initializer_range", "reorder_and_upcast_attn",
             "scale_attn_by_inverse_layer_idx", "summary_activation", "summary_first_dropout",
             "summary_proj_to_labels", "summary_type", "summary_use_proj", "use_cache"},
    "t5_v1_0": {"classifier_dropout", "dense_act_fn", "initializer_factor", "is_decoder",
                "is_gated_act", "scale_decoder_outputs", "use_cache"},
}
CONFIG_OMITTED["t5_v1_1"] = CONFIG_OMITTED["t5_v1_0"]


def _hf_model(name: str) -> transformers.PreTrainedModel:
  """A tiny random fp32 HF model; every parameter nudged off its init (norms 1, biases 0),
  so that two swapped names cannot agree by accident."""
  torch.manual_seed(0)
  if name == "bert":
    model = transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=48, max_position_embeddings=32))
  elif name == "gpt2":
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=32, bos_token_id=1,
        eos_token_id=1))
  else:
    v1_1 = name == "t5_v1_1"
    # Few buckets, so that 12 tokens reach the log-spaced ones; 4 heads of 16 != width 32.
    model = transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=16 if not v1_1 else 8, d_ff=48, num_layers=2,
        num_decoder_layers=3 if v1_1 else 2, num_heads=4, relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
        feed_forward_proj="gated-gelu" if v1_1 else "relu", tie_word_embeddings=not v1_1))
    if v1_1:  # transformers 5 ties lm_head to shared even here; the hub's v1.1 files do not.
      model.lm_head.weight = torch.nn.Parameter(torch.randn(VOCAB, 32))
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.1 * torch.randn_like(p))
  return model.eval()


def _batch() -> dict:
  rng = np.random.default_rng(0)
  ids = lambda: rng.integers(0, VOCAB, (BATCH, LENGTH)).astype(np.int32)
  positions = np.broadcast_to(np.arange(LENGTH, dtype=np.int32), (BATCH, LENGTH))
  ones = np.ones((BATCH, LENGTH), np.int32)
  return dict(inputs=ids(), positions=positions, segment_ids=ones, encoder_inputs=ids(),
              encoder_positions=positions, encoder_segment_ids=ones)


def _hf_logits(model, batch) -> np.ndarray:
  with torch.no_grad():
    if model.config.is_encoder_decoder:
      out = model(input_ids=torch.tensor(batch["encoder_inputs"]).long(),
                  decoder_input_ids=torch.tensor(batch["inputs"]).long())
    else:
      out = model(input_ids=torch.tensor(batch["inputs"]).long())
  return out.logits.numpy()


def _our_logits(config, params, batch) -> np.ndarray:
  cfg = model_config(config)
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: build_model(cfg, 0)), nnx.Param)
  model = nnx.merge(graphdef, params)
  return np.asarray(model(**{k: batch[k] for k in model.INPUTS}))


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
  """name -> (HF checkpoint directory, its logits on `_batch()`)."""
  out = {}
  for name in MODELS:
    model = _hf_model(name)
    directory = str(tmp_path_factory.mktemp(name))
    model.save_pretrained(directory, safe_serialization=True)
    out[name] = directory, _hf_logits(model, _batch())
  return out


@pytest.mark.parametrize("name,scan", [(name, False) for name in MODELS] +
                         [("gpt2", True), ("t5_v1_1", True)])
def test_import_matches_hf_logits(hf, tmp_path, name, scan):
  hf_dir, expected = hf[name]
  convert_hf.import_hf(hf_dir, str(tmp_path / "ours"), scan_layers=scan)
  config, params = pretrained.load_params(str(tmp_path / "ours"))
  assert config.model.scan_layers == scan
  logits = _our_logits(config, params, _batch())
  diff = float(np.abs(logits - expected).max())
  print(f"\n{name} scan_layers={scan}: max |ours - HF| = {diff:.2e} "
        f"(logits up to {np.abs(expected).max():.1f})")
  assert logits.shape == (BATCH, LENGTH, VOCAB)
  assert diff < 1e-4


def test_import_config_fields(hf, tmp_path):
  """What the BERT settings and the T5 v1.0/v1.1 differences become."""
  saved = {}
  for name in ("bert", "t5_v1_0", "t5_v1_1"):
    convert_hf.import_hf(hf[name][0], str(tmp_path / name))
    with open(tmp_path / name / "config.json") as f:
      saved[name] = json.load(f)
  bert, v10, v11 = (saved[name]["model"] for name in ("bert", "t5_v1_0", "t5_v1_1"))
  assert (bert["norm_position"], bert["num_token_types"], bert["activation"]) == ("post", 2, "gelu")
  assert bert["norm_eps"] == 1e-12 and saved["bert"]["data"]["seq_len"] <= bert["max_length"] == 32
  assert (v10["activation"], v10["tie_embeddings"], v10["head_dim"]) == ("relu", True, 16)
  assert (v11["activation"], v11["tie_embeddings"]) == ("geglu", False)
  assert v11["num_decoder_layers"] == 3
  assert (v11["relative_buckets"], v11["relative_max_distance"]) == (8, 16)


def _rewrite(hf_dir: str, out_dir: str, edit) -> str:
  """A copy of an HF checkpoint directory with its tensors changed by `edit`."""
  tensors = edit(safetensors.numpy.load_file(os.path.join(hf_dir, "model.safetensors")))
  os.makedirs(out_dir)
  shutil.copy(os.path.join(hf_dir, "config.json"), out_dir)
  safetensors.numpy.save_file(tensors, os.path.join(out_dir, "model.safetensors"),
                              metadata={"format": "pt"})
  return out_dir


def _hub_bert(tensors):
  """As older BERT files hold it: LayerNorm gamma/beta, pooler, next-sentence head, copies."""
  old = lambda k: k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias",
                                                                            "LayerNorm.beta")
  out = {old(k): v for k, v in tensors.items()}
  out["bert.embeddings.position_ids"] = np.arange(32)[None]
  out["bert.pooler.dense.weight"], out["bert.pooler.dense.bias"] = np.eye(32), np.zeros(32)
  out["cls.seq_relationship.weight"], out["cls.seq_relationship.bias"] = \
      np.ones((2, 32)), np.ones(2)
  out["cls.predictions.decoder.weight"] = tensors["bert.embeddings.word_embeddings.weight"]
  out["cls.predictions.decoder.bias"] = tensors["cls.predictions.bias"]
  return out


def _hub_gpt2(tensors):
  """As older GPT-2 files hold it: no `transformer.` prefix, causal-mask buffers."""
  out = {k.removeprefix("transformer."): v for k, v in tensors.items()}
  out.update({f"h.{i}.attn.bias": np.tril(np.ones((1, 1, 32, 32), np.float32)) for i in range(2)})
  return out


@pytest.mark.parametrize("name,edit", [("bert", _hub_bert), ("gpt2", _hub_gpt2)])
def test_import_older_hub_file_layouts(hf, tmp_path, name, edit):
  hf_dir, expected = hf[name]
  hub_dir = _rewrite(hf_dir, str(tmp_path / "hub"), edit)
  lines = convert_hf.import_hf(hub_dir, str(tmp_path / "ours"))
  assert "dropped" in lines[-1]
  config, params = pretrained.load_params(str(tmp_path / "ours"))
  assert np.abs(_our_logits(config, params, _batch()) - expected).max() < 1e-4


def test_import_refuses_tensors_it_cannot_place(hf, tmp_path):
  stray = lambda t: dict(t, **{"bert.encoder.layer.0.attention.self.rotary.weight": np.ones(3)})
  hf_dir = _rewrite(hf["bert"][0], str(tmp_path / "stray"), stray)
  with pytest.raises(ValueError, match="1 checkpoint tensors have no place in BertForMaskedLM"):
    convert_hf.import_hf(hf_dir, str(tmp_path / "ours"))
  untied = lambda t: dict(t, **{"cls.predictions.decoder.bias": t["cls.predictions.bias"] + 1})
  with pytest.raises(ValueError, match="cls.predictions.decoder.bias"):
    convert_hf.import_hf(_rewrite(hf["bert"][0], str(tmp_path / "bias"), untied),
                         str(tmp_path / "ours"))


@pytest.mark.parametrize("name,scan", [("bert", False), ("gpt2", True), ("t5_v1_0", False),
                                       ("t5_v1_1", True)])
def test_export_round_trip(hf, tmp_path, name, scan):
  hf_dir, expected = hf[name]
  ours, exported, again = (str(tmp_path / d) for d in ("ours", "exported", "again"))
  convert_hf.import_hf(hf_dir, ours, scan_layers=scan)
  convert_hf.export_hf(ours, exported)
  # Every tensor transformers wrote comes back under its name, bit for bit.
  original, back = (safetensors.numpy.load_file(os.path.join(d, "model.safetensors"))
                    for d in (hf_dir, exported))
  assert back.keys() == original.keys()
  for k, t in original.items():
    assert (back[k].dtype, back[k].shape, back[k].tobytes()) == (t.dtype, t.shape, t.tobytes()), k
  # Its config.json is the source's but for CONFIG_CHANGES and CONFIG_OMITTED: the logits
  # below cannot tell, say, BERT's layer_norm_eps 1e-12 from 1e-6 (2e-5 of their scale).
  with open(os.path.join(hf_dir, "config.json")) as f:
    source = json.load(f)
  with open(os.path.join(exported, "config.json")) as f:
    _assert_config_kept(name, source, json.load(f))
  # And it makes transformers build the same model from them.
  model = CLASSES[name].from_pretrained(exported).eval()
  np.testing.assert_allclose(_hf_logits(model, _batch()), expected, rtol=0,
                             atol=LOGITS_TOLERANCE * np.abs(expected).max())
  # Importing the export gives back every array exactly.
  convert_hf.import_hf(exported, again, scan_layers=scan)
  (_, first), (_, second) = pretrained.load_params(ours), pretrained.load_params(again)
  assert jax.tree.structure(first) == jax.tree.structure(second)
  assert all(jax.tree.leaves(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), first,
                                          second)))


def _assert_config_kept(name: str, source: dict, exported: dict) -> None:
  """That `exported` (an export's config.json) is `source` (its source's) as the CONFIG_
  tables allow; values compared as JSON, so that 1, 1.0 and true differ."""
  as_json = lambda v: json.dumps(v, sort_keys=True)
  changed = {k: (source.get(k, ABSENT), v) for k, v in exported.items()
             if as_json(source.get(k, ABSENT)) != as_json(v)}
  assert changed == CONFIG_CHANGES[name], "config.json keys changed by the export"
  omitted = source.keys() - exported.keys()
  assert omitted == CONFIG_OMITTED[name] | CONFIG_METADATA, "config.json keys left out"
  loaded = CLASSES[name].config_class.from_dict(exported)
  filled = {k: (source[k], getattr(loaded, k, ABSENT)) for k in omitted - CONFIG_METADATA}
  assert {k: v for k, v in filled.items() if as_json(v[0]) != as_json(v[1])} == {}, \
      "left-out config.json keys that transformers fills in otherwise"


def test_config_check_catches_what_logits_do_not(hf):
  """_assert_config_kept on the config.json an export of the BERT source writes (as export_hf
  makes it, less the params), then on copies of it a little wrong."""
  with open(os.path.join(hf["bert"][0], "config.json")) as f:
    source = json.load(f)
  config = convert_hf.config_from_hf(source, {})  # no tensors: no output matrix, so tied
  exported = convert_hf.hf_config(model_config(config), source)
  _assert_config_kept("bert", source, exported)
  without = lambda key: {k: v for k, v in exported.items() if k != key}
  wrong = [(source, dict(exported, layer_norm_eps=1e-6), "changed"),
           (source, dict(exported, type_vocab_size=2.0), "changed"),  # 2 in the source
           (source, without("type_vocab_size"), "left out"),
           # A source setting that transformers' default does not give back, left out.
           (dict(source, use_cache=False), exported, "fills in otherwise")]
  for bad_source, bad, message in wrong:
    with pytest.raises(AssertionError, match=message):
      _assert_config_kept("bert", bad_source, bad)


def _meta_count(model_cls, hf_config, untie=False) -> int:
  with torch.device("meta"):  # shapes only: nothing is allocated
    model = model_cls(hf_config)
    if untie:  # as transformers 5 loads the hub's T5.1.1 files (lm_head stored apart)
      model.lm_head.weight = torch.nn.Parameter(torch.empty_like(model.lm_head.weight))
  return sum(p.numel() for p in model.parameters())


def _our_count(family: str, variant: dict) -> int:
  c = base_config()
  c.model.family = family
  return count_params(model_config(apply_variant(c, variant)))


def test_count_params_matches_hf_published_sizes():
  t5_base = dict(d_model=768, d_ff=3072, num_layers=12, num_heads=12)  # T5Config() is t5-small
  cases = [
      (transformers.BertForMaskedLM, transformers.BertConfig(), False, "encoder",
       encoder.VARIANTS["base"], 109_514_298),
      (transformers.GPT2LMHeadModel, transformers.GPT2Config(), False, "decoder",
       decoder.VARIANTS["small"], 124_439_808),
      (transformers.GPT2LMHeadModel, transformers.GPT2Config(n_embd=1024, n_layer=24, n_head=16),
       False, "decoder", decoder.VARIANTS["medium"], 354_823_168),
      (transformers.T5ForConditionalGeneration, transformers.T5Config(**t5_base), False,
       "encoder_decoder", encoder_decoder.VARIANTS["base"], 222_903_552),
      (transformers.T5ForConditionalGeneration, transformers.T5Config(
          **dict(t5_base, d_ff=2048), feed_forward_proj="gated-gelu", tie_word_embeddings=False,
          vocab_size=32128), True, "encoder_decoder", encoder_decoder.VARIANTS["1_1_base"],
       247_577_856),
  ]
  for model_cls, hf_config, untie, family, variant, published in cases:
    assert _meta_count(model_cls, hf_config, untie) == _our_count(family, variant) == published


@pytest.mark.parametrize("family,option,value", [
    ("BertForMaskedLM", "position_embedding_type", "relative_key"),
    ("BertForMaskedLM", "hidden_act", "silu"),
    ("BertForMaskedLM", "is_decoder", True),
    ("GPT2LMHeadModel", "scale_attn_by_inverse_layer_idx", True),
    ("GPT2LMHeadModel", "activation_function", "swish"),
    ("T5ForConditionalGeneration", "feed_forward_proj", "gated-relu"),
])
def test_unsupported_hf_options_are_named(family, option, value):
  with pytest.raises(ValueError, match=f"{option}={value!r}"):
    convert_hf.config_from_hf({"architectures": [family], option: value}, {})


def test_t5_configs_as_older_transformers_wrote_them():
  """No tie key: v1.0 (tied, rescaled); tie_word_embeddings false: v1.1; gated-silu: SwiGLU."""
  t5 = {"architectures": ["T5ForConditionalGeneration"]}
  assert convert_hf.config_from_hf(t5, {}).model.tie_embeddings
  v1_1 = convert_hf.config_from_hf(dict(t5, tie_word_embeddings=False,
                                        feed_forward_proj="gated-silu"), {})
  assert not v1_1.model.tie_embeddings and v1_1.model.activation == "swiglu"


def test_export_refuses_what_the_architecture_cannot_hold(tmp_path):
  c = base_config()
  c.model.position = "rotary"
  with pytest.raises(ValueError, match="config.model.position='rotary' cannot be exported to "
                     "GPT2LMHeadModel"):
    convert_hf.hf_config(model_config(c))
  c.model.position, c.model.qk_norm = "learned", True
  with pytest.raises(ValueError, match="config.model.qk_norm=True cannot be exported to "
                     "GPT2LMHeadModel"):
    convert_hf.hf_config(model_config(c))


def test_cli_import_and_export(hf, tmp_path, capsys):
  ours, exported = str(tmp_path / "ours"), str(tmp_path / "exported")
  convert_hf.main(["import", f"--hf_dir={hf['gpt2'][0]}", f"--out_dir={ours}"])
  convert_hf.main(["export", f"--triform_dir={ours}", f"--out_dir={exported}"])
  out = capsys.readouterr().out
  assert "GPT2LMHeadModel -> " in out and "tie_embeddings True" in out
  with open(os.path.join(exported, "config.json")) as f:
    assert json.load(f)["eos_token_id"] == 1  # the source's ids, kept in hf_config.json


def _bad_dir(tmp_path, config: dict | None, name: str) -> str:
  directory = tmp_path / name
  directory.mkdir()
  if config is not None:
    (directory / "config.json").write_text(json.dumps(config))
  return str(directory)


def test_cli_bad_input_is_one_line(hf, tmp_path):
  cases = [
      (["import", f"--hf_dir={tmp_path / 'missing'}"], "is not a directory"),
      (["import", f"--hf_dir={_bad_dir(tmp_path, None, 'empty')}"], "config.json not found"),
      (["import", f"--hf_dir={_bad_dir(tmp_path, {'architectures': ['LlamaForCausalLM']}, 'l')}"],
       "unsupported architecture ['LlamaForCausalLM']"),
      (["import", f"--hf_dir={_bad_dir(tmp_path, {'architectures': ['GPT2LMHeadModel']}, 'bin')}"],
       "no model.safetensors"),
      (["export", f"--triform_dir={tmp_path / 'missing'}"], "is not a directory"),
  ]
  for argv, message in cases:
    with pytest.raises(SystemExit) as e:
      convert_hf.main([*argv, f"--out_dir={tmp_path / 'out'}"])
    assert str(e.value.code).startswith("error: ") and message in str(e.value.code)
    assert "\n" not in str(e.value.code)
  # As a process: the one line on stderr, no traceback, a failing exit status.
  run = subprocess.run([sys.executable, "-m", "tools.convert_hf", "import",
                        f"--hf_dir={tmp_path / 'missing'}", f"--out_dir={tmp_path / 'out'}"],
                       capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(
                           os.path.abspath(__file__))), check=False)
  assert run.returncode == 1
  assert run.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing'} is not a directory"]
