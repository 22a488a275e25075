"""Shared fixtures: a small text corpus made from local files, its tokenizer, tiny configs."""
import importlib
import json
import os
import shutil
import sysconfig
import tempfile

# One persistent compilation cache per test run, set before JAX is imported and inherited by
# the xdist workers and every subprocess a test starts: a program the tests compile many
# times (the tiny configs' train and eval steps) compiles once. A cache hit runs the same
# executable, so no number changes. A size limit turns on the cache's file lock, which keeps
# concurrent writers apart.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="triform_test_jax_cache_")
  os.environ["TRIFORM_TEST_CACHE_OWNER"] = str(os.getpid())
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(4 * 2**30))

import pytest  # noqa: E402

from train import corpus, tokenizer  # noqa: E402

TEST_VOCAB = 640


def _small_stdlib_files(count: int):
  """`count` small standard-library modules, in a fixed order."""
  root = sysconfig.get_paths()["stdlib"]
  names = sorted(f for f in os.listdir(root)
                 if f.endswith(".py") and 2_000 < os.path.getsize(os.path.join(root, f)) < 30_000)
  return [os.path.join(root, f) for f in names[:count]]


@pytest.fixture(scope="session")
def text_dir(tmp_path_factory):
  """A directory of 60 real text files (copies of small stdlib modules), as a user corpus."""
  directory = tmp_path_factory.mktemp("texts")
  for path in _small_stdlib_files(60):
    shutil.copy(path, directory / (os.path.basename(path)[:-3] + ".txt"))
  return directory


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def built(text_dir, data_dir):
  """(corpus, builder, tokenizer) for `text_dir`, built once per session."""
  c = corpus.resolve(str(text_dir / "*.txt"), validation_percent=10)
  builder = corpus.build(c, data_dir)
  docs = builder.as_data_source("train")
  texts = lambda: (docs[i]["text"].decode() for i in range(len(docs)))
  tok = tokenizer.load_or_train(os.path.join(c.dir(data_dir), "spm.model"), texts, TEST_VOCAB,
                                num_sentences=20_000)
  return c, builder, tok


def tiny_overrides(text_dir, data_dir) -> dict:
  """Dotted config fields that shrink any `*_tiny` config to seconds: 2 layers of width 32
  over the test corpus."""
  return {
      "data.source": str(text_dir / "*.txt"), "data.data_dir": data_dir,
      "data.validation_percent": 10, "data.vocab_size": TEST_VOCAB,
      "data.tokenizer_sentences": 20_000, "data.seq_len": 32, "model.max_length": 64,
      "model.num_layers": 2, "model.embed_dim": 32, "model.num_heads": 2, "model.head_dim": 16,
      "model.mlp_dim": 64, "train.batch_size": 4, "train.num_steps": 6, "train.log_every": 2,
      "train.eval_every": 3, "train.eval_batches": 2, "train.checkpoint_every": 2,
      "optim.warmup_steps": 2, "sample.num_prompts": 1, "sample.prompt_tokens": 8,
      "sample.new_tokens": 8}


def tiny_config(text_dir, data_dir, name="gpt_tiny"):
  """configs/<name>.py shrunk by `tiny_overrides`."""
  c = importlib.import_module(f"configs.{name}").get_config()
  c.update_from_flattened_dict(tiny_overrides(text_dir, data_dir))
  return c


def train_losses(experiment, batch: dict, steps: int) -> tuple[list[float], dict]:
  """(the loss of each of `steps` train steps of a fresh state on `batch`, the last metrics)."""
  state, step, losses = experiment.create_state(), experiment.jit_train_step(), []
  for _ in range(steps):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  return losses, metrics


def command_line(name, config, workdir):
  """Flags that make `python -m train.main` (or a tool) run `config`, loaded from
  configs/<name>.py, exactly: every leaf field as an override."""
  flags = [f"--config=configs/{name}.py", f"--workdir={workdir}"]
  for section, values in json.loads(config.to_json()).items():
    if not isinstance(values, dict) or section == "sharding":
      continue
    flags += [f"--config.{section}.{k}={v}" for k, v in values.items()]
  return flags


def pytest_unconfigure(config):
  """The process that made the compilation cache removes it."""
  del config
  if os.environ.get("TRIFORM_TEST_CACHE_OWNER") == str(os.getpid()):
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
