"""Labelled examples for fine-tuning tasks: built-in ones from the standard library, and files.

`config.task.data` names them:
  - a built-in task (BUILTIN), made from this interpreter's standard library so that tests
    and demos download nothing: `stdlib_package` (which top-level package a function
    comes from) and `stdlib_same_module` (whether two functions come from the same module);
  - local files, `PATH` with `{split}` in it (train, validation): JSONL with "text"
    (and "text_b" for pairs) and "label", or TSV with a header naming those columns;
  - `tfds:NAME` (glue/sst2, super_glue/boolq, ...): a TFDS dataset already prepared as
    ArrayRecord (read-only, never downloaded: train/sources.PreparedTfds), its train and
    validation splits, the text features config.task.tfds_text names and its ClassLabel
    feature "label" (whose names are the classes).
Every example is {"text": str, "text_b": str (pairs only), "label": int}; labels are
indices into the task's class names (config.task.classes for files).
"""
import ast
import csv
import functools
import hashlib
import json
import os
import sysconfig
import textwrap

import tensorflow_datasets as tfds

from train import sources

SPLITS = ("train", "validation")
# Packages of the built-in classification task: large enough to learn from, different in
# what they do.
STDLIB_PACKAGES = ("asyncio", "email", "unittest", "xml", "http", "multiprocessing")
_PER_CLASS = 400  # functions per package at most, so no package swamps the others
_MIN_LINES = 3


def _split_of(key: str, validation_percent: int = 20) -> str:
  """The split of an example, stable across machines (by a hash of `key`)."""
  bucket = int(hashlib.sha256(key.encode()).hexdigest(), 16) % 100
  return "validation" if bucket < validation_percent else "train"


@functools.lru_cache(maxsize=None)
def _functions(package: str) -> tuple:
  """(module path relative to the stdlib, function source) of each function in `package`,
  its tests excluded, in a fixed order."""
  root, found = sysconfig.get_paths()["stdlib"], []
  for directory, subdirs, files in sorted(os.walk(os.path.join(root, package))):
    subdirs[:] = sorted(d for d in subdirs if not d.startswith("test") and d != "__pycache__")
    for name in sorted(f for f in files if f.endswith(".py") and not f.startswith("test")):
      path = os.path.join(directory, name)
      with open(path, encoding="utf-8", errors="replace") as f:
        source = f.read()
      try:
        tree = ast.parse(source)
      except SyntaxError:
        continue
      lines = source.split("\n")
      for node in ast.walk(tree):
        if (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 >= _MIN_LINES):
          text = textwrap.dedent("\n".join(lines[node.lineno - 1:node.end_lineno]))
          found.append((os.path.relpath(path, root), text))
  return tuple(found)


def _stdlib_package(split: str) -> list[dict]:
  examples = []
  for label, package in enumerate(STDLIB_PACKAGES):
    functions = [text for _, text in _functions(package) if _split_of(text) == split]
    examples += [{"text": text, "label": label} for text in functions[:_PER_CLASS]]
  return examples


def _stdlib_same_module(split: str) -> list[dict]:
  """Pairs of functions: label 1 if both come from one module (half of them), else 0."""
  by_module = {}
  for package in STDLIB_PACKAGES:
    for module, text in _functions(package):
      if _split_of(module) == split:  # whole modules: the pairs of one split share none
        by_module.setdefault(module, []).append(text)
  modules = sorted(m for m, texts in by_module.items() if len(texts) >= 2)
  examples = []
  for i, module in enumerate(modules):
    texts, other = by_module[module], by_module[modules[(i + 1) % len(modules)]]
    for j in range(0, min(len(texts) - 1, 40), 2):
      examples.append({"text": texts[j], "text_b": texts[j + 1], "label": 1})
      examples.append({"text": texts[j], "text_b": other[j % len(other)], "label": 0})
  return examples


# name -> (class names, examples of a split, whether examples are pairs)
BUILTIN = {
    "stdlib_package": (STDLIB_PACKAGES, _stdlib_package, False),
    "stdlib_same_module": (("different", "same"), _stdlib_same_module, True),
}


def _read_rows(path: str) -> list[dict]:
  if not os.path.isfile(path):
    raise ValueError(f"config.task.data: {path} does not exist")
  with open(path, encoding="utf-8") as f:
    if path.endswith(".tsv"):
      rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    elif path.endswith(".jsonl"):
      rows = []
      for number, line in enumerate(f, 1):
        if line.strip():
          try:
            rows.append(json.loads(line))
          except json.JSONDecodeError as e:
            raise ValueError(f"config.task.data: {path}:{number} is not JSON ({e})") from None
    else:
      raise ValueError(f"config.task.data: {path} is neither .jsonl nor .tsv")
  if not rows:
    raise ValueError(f"config.task.data: {path} holds no examples")
  return rows


def _from_file(path: str, classes: tuple) -> list[dict]:
  examples = []
  for number, row in enumerate(_read_rows(path), 1):
    if "text" not in row or "label" not in row:
      raise ValueError(f"config.task.data: {path} example {number} lacks a text or label field")
    label = str(row["label"])
    if label not in classes:
      raise ValueError(f"config.task.data: {path} example {number} has label {label!r}, not "
                       f"one of config.task.classes={','.join(classes)!r}")
    example = {"text": str(row["text"]), "label": classes.index(label)}
    if row.get("text_b") is not None:
      example["text_b"] = str(row["text_b"])
    examples.append(example)
  return examples


class _Tfds:
  """A prepared TFDS classification dataset: texts from `text_features`, labels "label"."""

  def __init__(self, data: str, data_dir: str, text_features: str):
    self.features = tuple(f.strip() for f in text_features.split(",") if f.strip())
    if not 1 <= len(self.features) <= 2:
      raise ValueError(f"config.task.tfds_text={text_features!r} must name one text feature, "
                       "or two for pairs (e.g. sentence1,sentence2)")
    self.source = sources.PreparedTfds(data[len("tfds:"):], data_dir or None, self.features[0])
    info = self.source.builder.info.features
    for name in self.features[1:]:
      if name not in info.keys():
        raise ValueError(f"config.task.tfds_text: {name!r} is not a feature of "
                         f"{self.source.name!r}; it has {sorted(info.keys())}")
    if "label" not in info.keys() or not isinstance(info["label"], tfds.features.ClassLabel):
      raise ValueError(f"config.task.data={data!r} has no ClassLabel feature 'label'")
    self.classes = tuple(info["label"].names)

  def examples(self, split: str) -> list[dict]:
    rows = self.source.builder.as_data_source(split=split)
    decode = lambda v: v.decode("utf-8") if isinstance(v, bytes) else str(v)
    examples = []
    for i in range(len(rows)):
      row = rows[i]
      example = {"text": decode(row[self.features[0]]), "label": int(row["label"])}
      if len(self.features) == 2:
        example["text_b"] = decode(row[self.features[1]])
      if not 0 <= example["label"] < len(self.classes):  # GLUE's unlabelled test rows: -1
        raise ValueError(f"config.task.data: {self.source.name} {split} row {i} has label "
                         f"{example['label']}, outside its {len(self.classes)} classes")
      examples.append(example)
    if not examples:
      raise ValueError(f"config.task.data: {self.source.name} has an empty {split} split")
    return examples


def class_names(data: str, classes: str, tfds_dir: str = "", tfds_text: str = "") -> tuple:
  """The task's class names: a built-in or TFDS task's own, else config.task.classes."""
  if data in BUILTIN:
    return BUILTIN[data][0]
  if data.startswith("tfds:"):
    return _Tfds(data, tfds_dir, tfds_text).classes
  names = tuple(c.strip() for c in classes.split(",") if c.strip())
  if len(names) < 2:
    raise ValueError(f"config.task.classes={classes!r} must name at least two classes, "
                     "comma-separated, for the labels of config.task.data")
  return names


def load(data: str, classes: tuple, tfds_dir: str = "", tfds_text: str = "") -> dict:
  """{split: examples} of config.task.data; one-line ValueErrors for missing or empty files
  and labels outside `classes`."""
  if data in BUILTIN:
    return {split: BUILTIN[data][1](split) for split in SPLITS}
  if data.startswith("tfds:"):
    dataset = _Tfds(data, tfds_dir, tfds_text)
    return {split: dataset.examples(split) for split in SPLITS}
  if "{split}" not in data:
    raise ValueError(f"config.task.data={data!r} is neither a built-in task "
                     f"({', '.join(BUILTIN)}) nor a path with {{split}} in it "
                     "(e.g. /data/sst2/{split}.jsonl)")
  return {split: _from_file(data.format(split=split), classes) for split in SPLITS}
