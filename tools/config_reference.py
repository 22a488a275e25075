"""The config reference, docs/config.md, generated from configs/common.py.

  python -m tools.config_reference --out=docs/config.md

One table per section, in the order `_declared()` sets them: each field's default as
written, the values it admits and its meaning. A numeric field's `Num` gives both; any other
field's comment (on its line, else the block directly above it) gives its meaning, and its
choices where the comment lists them (`a | b`, or two or more quoted names).
tests/test_config_reference.py fails when docs/config.md differs from this output.
"""
import ast
import inspect
import io
import re
import tokenize

import ml_collections
from absl import app, flags

from configs import common

HEADER = """\
# Config reference

Generated from `configs/common.py` by `python -m tools.config_reference --out=docs/config.md`;
do not edit it by hand. An experiment file starts from these defaults and changes some; any
field can then be set from the command line as `--config.SECTION.FIELD=VALUE` (a top-level
field as `--config.FIELD=VALUE`).
"""
ROW = "| {} | {} | {} | {} |"


def _comments(source: str) -> dict[int, tuple[str, bool]]:
  """{line number: (comment text, whether the comment is alone on its line)}."""
  out = {}
  for tok in tokenize.generate_tokens(io.StringIO(source).readline):
    if tok.type == tokenize.COMMENT:
      out[tok.start[0]] = (tok.string.lstrip("#").strip(), tok.line.lstrip().startswith("#"))
  return out


def _declarations() -> dict[str, tuple[str, str, str]]:
  """{dotted path: (default as written, comment, banner above)} of every `c.PATH = VALUE` in
  common._declared(), sections included, in source order."""
  source = inspect.getsource(common)
  comments = _comments(source)
  func = next(n for n in ast.walk(ast.parse(source))
              if isinstance(n, ast.FunctionDef) and n.name == "_declared")
  out = {}
  for node in func.body:
    if not (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Attribute)):
      continue
    value = node.value
    if isinstance(value, ast.Call) and ast.unparse(value.func) == "Num":
      value = value.args[0]
    trailing = [comments[n][0] for n in range(node.lineno, node.end_lineno + 1)
                if n in comments and not comments[n][1]]
    above, line = [], node.lineno - 1
    while comments.get(line, ("", False))[1]:  # the comment-only lines right above
      above.insert(0, comments[line][0])
      line -= 1
    banners = [i for i, text in enumerate(above) if text.startswith("----")]
    banner = above[banners[-1]].strip("- ") if banners else ""
    block = above[banners[-1] + 1:] if banners else above  # a banner heads a group, not a field
    path = ast.unparse(node.targets[0]).removeprefix("c.")
    out[path] = (ast.get_source_segment(source, value), " ".join(trailing or block), banner)
  return out


def leaves(config: ml_collections.ConfigDict, prefix: str = "") -> dict:
  """{dotted path: value} of every field of `config` that is not a section."""
  out = {}
  for k, v in config.items():
    out.update(leaves(v, f"{prefix}{k}.") if isinstance(v, ml_collections.ConfigDict)
               else {f"{prefix}{k}": v})
  return out


def _choices(value, comment: str) -> str:
  """The values a comment lists for a non-numeric field: "relu | gelu (erf) | swiglu", or
  two or more quoted names; "" when it lists none, or a list without the default."""
  if isinstance(value, bool):
    return "`True`, `False`"
  names = ([part.split()[0] for part in comment.split("|")] if "|" in comment
           else re.findall(r'"(\w+)"', comment))
  return ", ".join(f"`{n}`" for n in names) if len(names) > 1 and value in names else ""


def _cell(text: str) -> str:
  return text.replace("|", "\\|")


def reference() -> str:
  """Markdown: every field of `common.base_config()` with its default, allowed values and
  meaning, one table per section."""
  declared, nums = _declarations(), common.numeric_fields()
  values = leaves(common.base_config())
  missing = sorted(set(values) - set(declared))
  if missing:
    raise ValueError(f"fields not set as `c.FIELD = VALUE` in common._declared(): {missing}")
  sections = {"": ["Top-level fields"]}
  for path, (written, comment, banner) in declared.items():
    if path not in values:  # a section: its heading
      sections[path] = [f"`{path}`" + (f": {banner}" if banner else "")]
      continue
    num = nums.get(path)
    allowed = num.describe() if num else _choices(values[path], comment)
    sections[path.rpartition(".")[0]].append(ROW.format(
        f"`{path}`", f"`{_cell(written)}`", _cell(allowed), _cell(num.meaning if num else comment)))
  parts = [HEADER]
  for title, *rows in sections.values():
    if rows:
      header = [ROW.format("field", "default", "allowed values", "meaning"), "|---" * 4 + "|"]
      parts.append("\n".join([f"## {title}", ""] + header + rows) + "\n")
  return "\n".join(parts)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  text = reference()
  if flags.FLAGS.out:
    with open(flags.FLAGS.out, "w", encoding="utf-8") as f:
      f.write(text)
  else:
    print(text, end="")


if __name__ == "__main__":
  flags.DEFINE_string("out", "", "Write the reference to this file (default: print it).")
  app.run(main)
