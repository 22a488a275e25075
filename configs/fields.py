"""Numeric config fields declared with their default, the values they admit and their meaning.

configs/common.py writes each numeric field on one line as

  c.optim.learning_rate = Num(1e-3, "(0, inf)", "peak learning rate, after warmup")

`allowed` is a union, joined by `|`, of intervals (`[a, b]`, `(a, b)`, half-open mixes;
`inf` and `-inf` as bounds) and single values (`-1`). An int default makes an int field.
`base_config()` holds the plain defaults; `common.numeric_fields()` returns every
declaration by its dotted path, for the checks (train/validation.py) and for docs.
"""
import dataclasses
import math

import ml_collections


def _number(text: str) -> float:
  text = text.strip()
  return {"inf": math.inf, "-inf": -math.inf}.get(text) or float(text)


def _admits(part: str, value: float) -> bool:
  """Whether `value` is in one `|`-part of an allowed-values string."""
  part = part.strip()
  if part[0] not in "[(":
    return value == _number(part)
  low, high = (_number(bound) for bound in part[1:-1].split(","))
  above = value >= low if part[0] == "[" else value > low
  below = value <= high if part[-1] == "]" else value < high
  return above and below


@dataclasses.dataclass(frozen=True)
class Num:
  """A numeric field: its default, the values it admits ("[1, inf)") and a one-line meaning."""
  default: int | float
  allowed: str
  meaning: str

  def __post_init__(self):
    if not self.admits(self.default):  # a declaration that contradicts itself
      raise ValueError(f"default {self.default!r} is outside its own range {self.allowed}")

  @property
  def is_int(self) -> bool:
    return isinstance(self.default, int)

  def describe(self) -> str:
    """The allowed values in words: "an integer in [1, inf)", "-1 or in [1, inf)"."""
    parts = [p.strip() for p in self.allowed.split("|")]
    words = " or ".join(f"in {p}" if p[0] in "[(" else p for p in parts)
    return f"an integer, {words}" if self.is_int and len(parts) > 1 else (
        f"an integer {words}" if self.is_int else words)

  def admits(self, value) -> bool:
    if isinstance(value, bool) or not isinstance(value, int if self.is_int else (int, float)):
      return False
    if math.isnan(value):
      return False
    return any(_admits(part, value) for part in self.allowed.split("|"))


def _in_order(config: ml_collections.ConfigDict):
  """(name, value) pairs in the order the fields were set (ConfigDict.items() sorts them),
  so configs keep their written order."""
  return config._fields.items()  # pylint: disable=protected-access


def defaults(declared: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`declared` with each Num replaced by its default, fields in the same order."""
  plain = ml_collections.ConfigDict()
  for k, v in _in_order(declared):
    plain[k] = (defaults(v) if isinstance(v, ml_collections.ConfigDict)
                else v.default if isinstance(v, Num) else v)
  return plain


def declarations(declared: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Num]:
  """{dotted path: Num} of every numeric field of `declared`."""
  out = {}
  for k, v in _in_order(declared):
    if isinstance(v, ml_collections.ConfigDict):
      out.update(declarations(v, f"{prefix}{k}."))
    elif isinstance(v, Num):
      out[f"{prefix}{k}"] = v
  return out


def numeric_leaves(config: ml_collections.ConfigDict, prefix: str = "") -> dict:
  """{dotted path: value} of every int or float field of `config` (not bools)."""
  out = {}
  for k, v in config.items():
    if isinstance(v, ml_collections.ConfigDict):
      out.update(numeric_leaves(v, f"{prefix}{k}."))
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
      out[f"{prefix}{k}"] = v
  return out


def check(config: ml_collections.ConfigDict, declared: dict[str, Num]) -> None:
  """Raises ValueError, in one line naming the field, its value and the allowed values, for
  the first declared field of `config` outside its range."""
  for path, num in declared.items():
    section, _, name = path.rpartition(".")
    holder = config
    for key in filter(None, section.split(".")):
      holder = holder.get(key) if holder is not None else None
    if holder is None or name not in holder:
      continue  # a section this config does not have
    value = holder[name]
    if not num.admits(value):
      raise ValueError(f"config.{path}={value!r} must be {num.describe()} ({num.meaning})")
