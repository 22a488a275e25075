"""Examples for fine-tuning tasks: built-in ones from the standard library, and files.

`config.task.data` names them:
  - a built-in task, made from this interpreter's standard library so that tests and demos
    download nothing. Classification (BUILTIN): `stdlib_package` (which top-level package a
    function comes from), `stdlib_same_module` (whether two functions come from the same
    module) and `stdlib_swapped_lines` (whether a function reads as written or has two
    neighbouring lines swapped). Text to text (BUILTIN_PAIRS): `stdlib_function_name` (a
    function's name from its body), `stdlib_docstring_body` (a function's body from its
    signature and docstring, as a prompt and its completion), `stdlib_next_line` (a
    function's next line of code from its signature and first lines) and
    `stdlib_unseen_function_name` (`stdlib_function_name` validated on functions of the
    files the built-in corpus holds out, so pretraining never read them; classification:
    `stdlib_unseen_swapped_lines` likewise); a classification task is text to text too, its
    class name the target (as the T5 paper casts classification);
  - local files, `PATH` with `{split}` in it (train, validation): JSONL, or TSV with a
    header, holding "text" (and "text_b" for pairs) and "label" for classification, and
    "input" and "target" (or "prompt" and "completion") for text to text;
  - `tfds:NAME` (glue/sst2, super_glue/boolq, ...): a TFDS dataset already prepared as
    ArrayRecord (read-only, never downloaded: train/sources.PreparedTfds), its train and
    validation splits, the text features config.task.tfds_text names and its ClassLabel
    feature "label" (whose names are the classes).
A classification example is {"text": str, "text_b": str (pairs only), "label": int}, its
label an index into the task's class names (config.task.classes for files); a text-to-text
example is {"input": str, "target": str}.
"""
import ast
import collections
import csv
import functools
import hashlib
import json
import os
import sysconfig
import textwrap

import tensorflow_datasets as tfds

from train import corpus, sources

SPLITS = ("train", "validation")
# Packages of the built-in classification task: large enough to learn from, different in
# what they do.
STDLIB_PACKAGES = ("asyncio", "email", "unittest", "xml", "http", "multiprocessing")
_PER_CLASS = 400  # functions per package at most, so no package swamps the others
_MIN_LINES = 3
_CONTEXT_LINES = 5  # code lines a next-line input holds at most, below the signature
_NEXT_LINE_EXAMPLES = {"train": 4000, "validation": 600}
_UNSEEN_VALIDATION_EXAMPLES = 600  # validation examples of an unseen task at most
_CORPUS_VALIDATION_PERCENT = 5  # config.data.validation_percent's default
_SKIPPED = ("__pycache__", "site-packages", "dist-packages")  # directories no task reads


def _hash(key: str) -> int:
  """A number drawn from `key`, the same on every machine."""
  return int(hashlib.sha256(key.encode()).hexdigest(), 16)


def _split_of(key: str, validation_percent: int = 20) -> str:
  """The split of an example, stable across machines (by a hash of `key`)."""
  bucket = _hash(key) % 100
  return "validation" if bucket < validation_percent else "train"


# A function of the standard library: its module (relative to the stdlib), its source
# (dedented), its name, and its source split where the body starts (`head` holds the
# signature, `docstring` the docstring statement, `rest` what follows them).
Function = collections.namedtuple("Function", "module text name head docstring rest")


@functools.lru_cache(maxsize=None)
def _functions(package: str) -> tuple:
  """Every function (Function) of `package` ("": the whole standard library) of at least
  _MIN_LINES lines, tests and site-packages excluded, in a fixed order."""
  root, found = sysconfig.get_paths()["stdlib"], []
  for directory, subdirs, files in os.walk(os.path.join(root, package)):
    subdirs[:] = sorted(d for d in subdirs if not d.startswith("test") and d not in _SKIPPED)
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
          own = textwrap.dedent("\n".join(lines[node.lineno - 1:node.end_lineno])).split("\n")
          body = node.body[0].lineno - node.lineno  # decorators sit above node.lineno
          doc = node.body[0].end_lineno - node.lineno + 1 if ast.get_docstring(node) else body
          join = lambda part: "\n".join(part)
          found.append(Function(os.path.relpath(path, root), join(own), node.name,
                                join(own[:body]), join(own[body:doc]), join(own[doc:])))
  return tuple(found)


def _stdlib_package(split: str) -> list[dict]:
  examples = []
  for label, package in enumerate(STDLIB_PACKAGES):
    functions = [f.text for f in _functions(package) if _split_of(f.text) == split]
    examples += [{"text": text, "label": label} for text in functions[:_PER_CLASS]]
  return examples


def _stdlib_same_module(split: str) -> list[dict]:
  """Pairs of functions: label 1 if both come from one module (half of them), else 0."""
  by_module = {}
  for package in STDLIB_PACKAGES:
    for function in _functions(package):
      if _split_of(function.module) == split:  # whole modules: the splits share none
        by_module.setdefault(function.module, []).append(function.text)
  modules = sorted(m for m, texts in by_module.items() if len(texts) >= 2)
  examples = []
  for i, module in enumerate(modules):
    texts, other = by_module[module], by_module[modules[(i + 1) % len(modules)]]
    for j in range(0, min(len(texts) - 1, 40), 2):
      examples.append({"text": texts[j], "text_b": texts[j + 1], "label": 1})
      examples.append({"text": texts[j], "text_b": other[j % len(other)], "label": 0})
  return examples


def _swapped_lines(function: Function) -> dict:
  """The function as written (label 1), or with two neighbouring lines among its first six
  swapped (label 0), the choice and the lines drawn from a hash of its text: whether code
  reads right, like CoLA's sentences (Warstadt et al. 2019). The swap stays in the first
  lines, so a row that keeps only a function's start still holds it."""
  draw = _hash("swap:" + function.text)
  lines = function.text.split("\n")
  # Neighbours i, i + 1 that differ, among the first six lines.
  swappable = [i for i in range(min(len(lines), 6) - 1) if lines[i] != lines[i + 1]]
  if draw % 2 or not swappable:
    return {"text": function.text, "label": 1}
  i = swappable[(draw // 2) % len(swappable)]
  lines[i], lines[i + 1] = lines[i + 1], lines[i]
  return {"text": "\n".join(lines), "label": 0}


def _package_examples(split: str, make) -> list[dict]:
  """make(function) (None: skip it) for up to _PER_CLASS functions of each package in
  `split`."""
  examples = []
  for package in STDLIB_PACKAGES:
    made = [make(f) for f in _functions(package) if _split_of(f.text) == split]
    examples += [example for example in made if example is not None][:_PER_CLASS]
  return examples


def _unseen_examples(split: str, make) -> list[dict]:
  """_package_examples validated on functions pretraining never read: those of the files
  the built-in corpus holds out by default (train/corpus.py, 5%), from the whole standard
  library, one example per distinct text, at most _UNSEEN_VALIDATION_EXAMPLES. Training:
  _package_examples' train split without the examples of those functions."""
  text = lambda example: example.get("input", example.get("text"))
  held_out = [make(f) for f in sorted(_functions(""), key=lambda f: _hash(f.text))
              if corpus.is_validation(f.module, _CORPUS_VALIDATION_PERCENT)]
  held_out = [example for example in held_out if example is not None]
  held_out_texts = {text(example) for example in held_out}
  train = [e for e in _package_examples("train", make) if text(e) not in held_out_texts]
  if split == "train":
    return train
  train_texts, validation = {text(example) for example in train}, {}
  for example in held_out:
    if text(example) not in train_texts:
      validation.setdefault(text(example), example)
  return list(validation.values())[:_UNSEEN_VALIDATION_EXAMPLES]


def _function_name(function: Function) -> dict:
  """The body (docstring included) in, the name out."""
  return {"input": "\n".join(part for part in (function.docstring, function.rest) if part),
          "target": function.name}


def _docstring_body(function: Function) -> dict | None:
  """Signature and docstring in, the code below them out (functions with a docstring)."""
  if not function.docstring or not function.rest.strip():
    return None
  return {"input": function.head + "\n" + function.docstring + "\n", "target": function.rest}


def _stdlib_next_line(split: str) -> list[dict]:
  """Line-level code completion, as in CodeXGLUE (Lu et al. 2021): a function's signature
  and its first code lines (docstring left out) in, the next non-blank line out, stripped.
  The line is drawn from a hash of the function among its first _CONTEXT_LINES + 1 code
  lines. Functions of the whole standard library, split as the built-in corpus splits its
  files by default (train/corpus.py, 5%), so that no validation function was read in
  pretraining on that corpus; at most _NEXT_LINE_EXAMPLES of each split."""
  examples = []
  for function in _functions(""):
    if corpus.is_validation(function.module, _CORPUS_VALIDATION_PERCENT) != (
        split == "validation"):
      continue
    code = function.rest.split("\n")
    lines = [k for k in range(min(len(code), _CONTEXT_LINES + 1)) if code[k].strip()]
    if not lines:
      continue
    k = lines[_hash(f"next:{function.module}:{function.text}") % len(lines)]
    examples.append((_hash(function.text), {
        "input": "\n".join([function.head, *code[:k]]), "target": code[k].strip()}))
  return [example for _, example in sorted(examples, key=lambda e: e[0])][
      :_NEXT_LINE_EXAMPLES[split]]


# name -> (class names, examples of a split, whether examples are pairs)
BUILTIN = {
    "stdlib_package": (STDLIB_PACKAGES, _stdlib_package, False),
    "stdlib_same_module": (("different", "same"), _stdlib_same_module, True),
    "stdlib_swapped_lines": (("swapped", "as_written"),
                             lambda split: _package_examples(split, _swapped_lines), False),
    "stdlib_unseen_swapped_lines": (("swapped", "as_written"),
                                    lambda split: _unseen_examples(split, _swapped_lines), False),
}
# name -> examples of a split, {"input", "target"} each
BUILTIN_PAIRS = {
    "stdlib_function_name": lambda split: _package_examples(split, _function_name),
    "stdlib_docstring_body": lambda split: _package_examples(split, _docstring_body),
    "stdlib_next_line": _stdlib_next_line,
    "stdlib_unseen_function_name": lambda split: _unseen_examples(split, _function_name),
}
# The field names a text-to-text file may use: (input, target) or (prompt, completion).
PAIR_FIELDS = (("input", "target"), ("prompt", "completion"))


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


def _pairs_from_file(path: str) -> list[dict]:
  rows, examples = _read_rows(path), []
  fields = next((f for f in PAIR_FIELDS if set(f) <= set(rows[0])), None)
  if fields is None:
    raise ValueError(f"config.task.data: {path} example 1 has fields {sorted(rows[0])}; a "
                     "text-to-text task reads input and target (or prompt and completion)")
  for number, row in enumerate(rows, 1):
    if not all(isinstance(row.get(f), str) for f in fields):
      raise ValueError(f"config.task.data: {path} example {number} lacks a text {fields[0]} "
                       f"or {fields[1]} field")
    examples.append({"input": row[fields[0]], "target": row[fields[1]]})
  return examples


def load_pairs(data: str) -> dict:
  """{split: [{"input", "target"}, ...]} of a text-to-text config.task.data; one-line
  ValueErrors for missing or empty files and absent fields."""
  if data in BUILTIN_PAIRS:
    return {split: BUILTIN_PAIRS[data](split) for split in SPLITS}
  if data in BUILTIN:  # a classification task in T5's way: the class name is the target
    names, make, _ = BUILTIN[data]
    join = lambda e: e["text"] + ("\n" + e["text_b"] if "text_b" in e else "")
    return {split: [{"input": join(e), "target": names[e["label"]]} for e in make(split)]
            for split in SPLITS}
  if "{split}" not in data:
    raise ValueError(f"config.task.data={data!r} is neither a built-in task "
                     f"({', '.join([*BUILTIN_PAIRS, *BUILTIN])}) nor a path with {{split}} "
                     "in it (e.g. /data/summaries/{split}.jsonl)")
  return {split: _pairs_from_file(data.format(split=split)) for split in SPLITS}
