"""Rows in, typed columns out: the pure parts of `map` over DataFrames, `classify` and `extract`.

Templates (`Template.parse`):
- A Series (or list): `{value}` / `{}` is the value, `{index}` the row label; any other
  brace is left as written (as `map` always did).
- A DataFrame: `{column}` is that row's value of the column (matched by its exact name,
  `str()` of it for non-text names), `{index}` the row label (a column named `index`
  wins). A placeholder that looks like a name but is no column is ONE error before
  anything is sent, naming the known columns (and a close one); a brace with anything
  else inside (`{"a": 1}`, code) is left as written.
- `{{` / `}}` are literal braces. Values are inserted verbatim and never parsed.
- Missing values (None, NaN, NA, NaT): a Series value that is missing, or a DataFrame row
  whose used columns are *all* missing, is skipped (nothing is sent; the row is marked
  "missing"). In a row with some values present, a missing one renders as empty text.

- `{name:spec}` and `{name!r}` (str.format's specs and conversions) are one error before
  anything is sent: values are inserted as text, so format them in the data first.

Columns (`Shape`, `frame`): a pydantic model, dataclass or TypedDict gives one column per
field, named as the answer's JSON names it (a model's alias: the quick form's `class`, not
its attribute `class_`); any other output type one column, `output`. Each column's dtype comes
from the annotation alone, never from the data, so every run (and `pd.concat` of runs) has the
same dtypes and a failed row holds NA: int → Int64, float → float64, bool → boolean, str →
string, date and datetime → datetime64[us] (aware datetimes in UTC: datetime64[us, UTC]),
`Literal[...]` → Categorical with exactly those categories (in their order), anything else
(lists, dicts, nested models) → object. Values that do not fit the dtype fall back to object.
`_error` is a string column: NA, or the one-line reason the row has no value.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError
from .schemas import class_fields

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Slot", "Template", "Shape", "frame", "column", "is_missing", "record_template", "literal_values", "as_literal",
           "checked_labels", "ERROR"]

ERROR = "_error"
"""The column that says why a row has no value (None when it has one)."""

_INNER = re.compile(r"\{([^{}\n]*)\}")
_NAME_LIKE = re.compile(r"\s*[^\W\d]\w*(?:[ .\-]+\w+)*\s*")
_FORMAT = re.compile(r"(?:![rsa])?(?::(?:.?[<>=^])?[-+ ]?z?#?0?\d*[,_]?(?:\.\d+)?[bcdeEfFgGnosxX%]?)?")
"""What str.format allows after a field name: a conversion (`!r`) and a spec (`:.2f`, `:>10`, `:,`)."""


@dataclass(frozen=True)
class Slot:
    """A placeholder of a template: `kind` "value", "index", "column" (its `name`) or "constant" (its `text`)."""

    kind: str
    name: Any = None
    text: str = ""


@dataclass(frozen=True)
class Template:
    """A template parsed once: literal text and slots, filled per row without parsing any value."""

    parts: tuple[str | Slot, ...]

    @classmethod
    def parse(cls, template: str, columns: Sequence[Any] | None = None,
              constants: Mapping[str, str] | None = None) -> "Template":
        """Parse `template` for a Series (`columns=None`) or a DataFrame with these columns.

        `constants` are extra names the template may use (e.g. classify's `{labels}`); a
        column of the same name wins. Unknown column names are one `ConfigurationError`.
        """
        if not isinstance(template, str):
            raise ConfigurationError(f"The template must be text, not {type(template).__name__}.")
        by_name = {str(c): c for c in columns} if columns is not None else {}
        constants = dict(constants or {})
        parts: list[str | Slot] = []
        unknown: list[str] = []
        formatted: list[tuple[str, str]] = []
        i, n = 0, len(template)
        while i < n:
            if template.startswith("{{", i) or template.startswith("}}", i):
                parts.append(template[i])
                i += 2
                continue
            match = _INNER.match(template, i) if template[i] == "{" else None
            if match is None:
                j = i + 1
                while j < n and template[j] not in "{}":
                    j += 1
                parts.append(template[i:j])
                i = j
                continue
            inner = match.group(1)
            slot = _slot(inner, columns is not None, by_name, constants)
            field = None if slot is not None else _formatted(inner, columns is not None, by_name, constants)
            if field is not None:
                formatted.append((inner, field))
            elif slot is None and columns is not None and (inner == "" or _NAME_LIKE.fullmatch(inner)):
                unknown.append(inner)
            parts.append(slot if slot is not None else match.group(0))
            i = match.end()
        if formatted:
            shown = ", ".join(f"{{{field}}} for {{{inner}}}" for inner, field in dict.fromkeys(formatted))
            raise ConfigurationError(f"Format specs are not supported in templates: write {shown} (values are "
                                     "inserted as text; format them in the data first, and write {{ and }} "
                                     "for literal braces).")
        if unknown:
            raise ConfigurationError(_unknown_columns(unknown, list(by_name)))
        return cls(tuple(_joined(parts)))

    @property
    def slots(self) -> list[Slot]:
        return [p for p in self.parts if isinstance(p, Slot)]

    @property
    def columns(self) -> list[Any]:
        """The columns the template uses, each once, in order of first use."""
        seen: dict[Any, None] = {}
        for slot in self.slots:
            if slot.kind == "column":
                seen.setdefault(slot.name, None)
        return list(seen)

    def fill(self, value: Any = None, label: Any = None, row: Mapping[Any, Any] | None = None) -> str:
        """The prompt for one row: slots replaced by text, missing values by nothing."""
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            elif part.kind == "value":
                out.append(_text(value))
            elif part.kind == "index":
                out.append(_text(label))
            elif part.kind == "constant":
                out.append(part.text)
            else:
                out.append(_text((row or {}).get(part.name)))
        return "".join(out)

    def prompts(self, data: Any) -> tuple[list[str | None], Any]:
        """One prompt per row of a Series or DataFrame (None: skipped, its used values all missing), and its index."""
        import pandas as pd

        index = data.index
        if isinstance(data, pd.Series):
            return [None if is_missing(v) else self.fill(v, label) for v, label in zip(data.tolist(), index)], index
        used = self.columns
        twice = [str(name) for name in used if list(data.columns).count(name) > 1]
        if twice:
            raise ConfigurationError(f"The DataFrame has more than one column named {twice[0]!r}, so "
                                     f"{{{twice[0]}}} is ambiguous: rename one of them.")
        values = {name: data[name].tolist() for name in used}  # per column: no dtype mixing across a row
        prompts: list[str | None] = []
        for position, label in enumerate(index):
            row = {name: values[name][position] for name in used}
            prompts.append(None if all(is_missing(v) for v in row.values()) else self.fill(None, label, row))
        return prompts, index


def _slot(inner: str, frame: bool, by_name: Mapping[str, Any], constants: Mapping[str, str]) -> Slot | None:
    if frame:
        if inner in by_name:
            return Slot("column", by_name[inner])
    elif inner in ("", "value"):
        return Slot("value")
    if inner == "index":
        return Slot("index")
    if inner in constants:
        return Slot("constant", text=constants[inner])
    return None


def _formatted(inner: str, frame: bool, by_name: Mapping[str, Any], constants: Mapping[str, str]) -> str | None:
    """The field of `{field!r}` / `{field:spec}` (str.format's forms), or None when `inner` is not one.

    A field the template knows counts with any valid spec; an unknown name (a DataFrame's
    template only) only with a spec without spaces, so `{x: 1}` (JSON-like text) stays as written."""
    for at, char in enumerate(inner):
        if char not in "!:" or not _FORMAT.fullmatch(inner, at):
            continue
        field = inner[:at]
        if _slot(field, frame, by_name, constants) is not None:
            return field or "value"
        if frame and field.isidentifier() and not any(c.isspace() for c in inner):
            return field
    return None


def _joined(parts: list[str | Slot]) -> list[str | Slot]:
    out: list[str | Slot] = []
    for part in parts:
        if isinstance(part, str) and out and isinstance(out[-1], str):
            out[-1] += part
        elif part != "":
            out.append(part)
    return out


def _unknown_columns(unknown: list[str], known: list[str]) -> str:
    names = list(dict.fromkeys(unknown))
    first = names[0]
    if first in ("", "value") and "value" not in known:
        head = "A DataFrame's template names its columns, e.g. {" + (known[0] if known else "title") + "}"
    else:
        shown = ", ".join("{" + name + "}" for name in names)
        head = f"The template uses {shown}, which {'is no column' if len(names) == 1 else 'are no columns'}"
        close = difflib.get_close_matches(first.strip(), known, n=1, cutoff=0.6) or \
            [k for k in known if k.lower() == first.strip().lower()]
        if close:
            head += f" (did you mean {{{close[0]}}}?)"
    columns = ", ".join(known) if known else "none"
    return f"{head}. Columns: {columns}; {{index}} is the row label; write {{{{ and }}}} for literal braces."


def record_template(columns: Sequence[Any], instruction: str) -> Template:
    """`instruction`, a blank line, then one `name: value` line per column (classify/extract without a template)."""
    parts: list[str | Slot] = [instruction + "\n\n"]
    for position, column in enumerate(columns):
        parts += [("\n" if position else "") + f"{column}: ", Slot("column", column)]
    return Template(tuple(_joined(parts)))


def is_missing(value: Any) -> bool:
    """None, NaN, pandas NA or NaT (a list or other container is never missing)."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    kind = type(value).__name__
    if kind in ("NAType", "NaTType"):
        return True
    try:
        return bool(value != value)  # numpy NaN scalars and friends
    except Exception:
        return False


def _text(value: Any) -> str:
    return "" if is_missing(value) else str(value)


# ---- columns out ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """How answers of an output type become columns: each (name, annotation), and how to read a field."""

    columns: tuple[tuple[str, Any], ...]
    """(column name, annotation) per column."""
    structured: bool
    attributes: tuple[str, ...] = ()
    """Per column, the attribute (or a TypedDict's key) its value is read from."""

    @classmethod
    def of(cls, output_type: Any) -> "Shape":
        fields = class_fields(output_type)
        if fields is None:
            return cls((("output", output_type),), False)
        if ERROR in [name for name, _, _ in fields]:
            raise ConfigurationError(f"{_type_name(output_type)} has a field named {ERROR}, the column map() "
                                     "uses for each row's failure; rename the field.")
        return cls(tuple((name, annotation) for name, _, annotation in fields), True,
                   tuple(attribute for _, attribute, _ in fields))

    def values(self, output: Any) -> list[Any]:
        """One value per column from one validated output."""
        if not self.structured:
            return [output]
        if isinstance(output, Mapping):
            return [output.get(key) for key in self.attributes]
        return [getattr(output, attribute, None) for attribute in self.attributes]


def _type_name(output_type: Any) -> str:
    return getattr(output_type, "__name__", None) or repr(output_type)


def _bare(annotation: Any) -> Any:
    """The annotation without Annotated metadata, Optional/`| None`, Required/NotRequired/ReadOnly."""
    while True:
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)
        if origin is typing.Annotated or origin in _QUALIFIERS:
            annotation = args[0]
        elif origin in (typing.Union, types.UnionType):
            rest = [a for a in args if a is not type(None)]
            if len(rest) != 1:
                return annotation
            annotation = rest[0]
        else:
            return annotation


_QUALIFIERS = tuple(getattr(typing, name) for name in ("Required", "NotRequired", "ReadOnly") if hasattr(typing, name))


def literal_values(annotation: Any) -> list[Any] | None:
    """The values of a `Literal[...]` (after Optional/Annotated), each once in order; None if it is no Literal."""
    bare = _bare(annotation)
    if typing.get_origin(bare) is not typing.Literal:
        return None
    return list(dict.fromkeys(typing.get_args(bare)))


def column(values: list[Any], annotation: Any, index: Any) -> "pd.Series":
    """One typed column (None for a row without a value); object dtype when the values do not fit the type."""
    import numpy as np
    import pandas as pd

    categories = literal_values(annotation)
    bare = _bare(annotation)
    try:
        if categories is not None:
            return pd.Series(pd.Categorical(values, categories=categories), index=index)
        if bare in (_dt.date, _dt.datetime):
            return _times(values, index)
        dtype = _DTYPES.get(bare)
        if dtype is not None:
            return pd.Series(values, index=index, dtype=dtype)
    except (TypeError, ValueError, OverflowError):
        pass
    cells = np.empty(len(values), dtype=object)
    for position, value in enumerate(values):  # one value per cell: a list is never spread across cells
        cells[position] = value
    return pd.Series(cells, index=index, dtype=object)


_DTYPES: dict[Any, str] = {int: "Int64", float: "float64", bool: "boolean", str: "string"}


def _times(values: list[Any], index: Any) -> "pd.Series":
    """Dates and datetimes as datetime64[us] (microseconds: what Python's datetime holds); aware ones
    in UTC. Naive and aware values mixed, or a year pandas cannot hold, raise (→ object)."""
    import pandas as pd

    aware = {isinstance(v, _dt.datetime) and v.tzinfo is not None for v in values if isinstance(v, _dt.date)}
    if len(aware) > 1:
        raise ValueError("naive and aware times in one column")
    utc = aware == {True}
    stamps = pd.to_datetime(pd.Series(values, index=index, dtype=object), utc=utc)
    return stamps.astype("datetime64[us, UTC]" if utc else "datetime64[us]")


def frame(shape: Shape, index: Any, outputs: list[Any], errors: list[str | None]) -> "pd.DataFrame":
    """The typed DataFrame for one run: a row per input (in place, NA fields when `errors` says why), plus `_error`."""
    import pandas as pd

    rows = [shape.values(output) if error is None else [None] * len(shape.columns)
            for output, error in zip(outputs, errors)]
    data: dict[str, Any] = {}
    for position, (name, annotation) in enumerate(shape.columns):
        data[name] = column([row[position] for row in rows], annotation, index)
    data[ERROR] = column(list(errors), str, index)
    return pd.DataFrame(data, index=index)


def as_literal(labels: Sequence[str]) -> Any:
    """`Literal[labels...]` built at run time (classify's output type)."""
    return typing.Literal.__getitem__(tuple(labels))


def checked_labels(labels: Any) -> list[str]:
    """classify's labels: at least two distinct non-empty strings, else one clear error."""
    if isinstance(labels, (str, bytes)) or not hasattr(labels, "__iter__"):
        raise ConfigurationError("labels= takes a list of labels, e.g. labels=['positive', 'negative'].")
    labels = list(labels)
    bad = [label for label in labels if not isinstance(label, str) or not label.strip()]
    if bad:
        raise ConfigurationError(f"labels= must be non-empty strings; {bad[0]!r} is not.")
    if len(set(labels)) != len(labels):
        twice = next(label for label in labels if labels.count(label) > 1)
        raise ConfigurationError(f"labels= lists {twice!r} more than once; give each label once.")
    if len(labels) < 2:
        raise ConfigurationError("labels= needs at least two labels to choose between.")
    return labels


# ---- what a run asks of each row (map, classify, extract, estimate) -------------------------


@dataclass(frozen=True)
class Ask:
    """What a run asks of each row and what its result is: `where` names the function in errors,
    `shape` (with `output_type`) makes typed columns, `labels` makes classify's Categorical Series."""

    where: str
    template: str | Template
    output_type: Any = None
    labels: tuple[str, ...] | None = None
    shape: Shape | None = field(default=None, compare=False)
    """The output type's columns, read once (a type that cannot be columns: one error, here)."""

    def __post_init__(self) -> None:
        if self.shape is None and self.output_type is not None:
            object.__setattr__(self, "shape", Shape.of(self.output_type))


def rows_of(values: Any, where: str) -> Any:
    """The input as a Series or DataFrame (a list becomes a Series with a RangeIndex)."""
    import pandas as pd
    if isinstance(values, (pd.Series, pd.DataFrame)):
        return values
    if hasattr(values, "__iter__") and not isinstance(values, (str, bytes, dict)):
        import numpy as np

        items = list(values)
        cells = np.empty(len(items), dtype=object)
        for position, item in enumerate(items):  # each item one cell, even a list or a tuple
            cells[position] = item
        return pd.Series(cells, dtype=object)
    raise ConfigurationError(f"{where}() takes a list or a pandas Series of values, or a DataFrame of rows, "
                             f"not {type(values).__name__}.")


def template_for(data: Any, ask: Ask) -> Template:
    """The template parsed for this input; one clear error when it cannot fill a prompt per row."""
    import pandas as pd
    frame_input = isinstance(data, pd.DataFrame)
    template = ask.template
    if not isinstance(template, Template):
        constants = {"labels": ", ".join(ask.labels)} if ask.labels else None
        template = Template.parse(template, list(data.columns) if frame_input else None, constants)
    kinds = {slot.kind for slot in template.slots}
    if frame_input and "column" not in kinds:
        raise ConfigurationError("The template names no column, so every row would get the same prompt: "
                                 "put {column} where each row's value goes (columns: "
                                 f"{', '.join(str(c) for c in data.columns) or 'none'}).")
    if not frame_input and "value" not in kinds:
        raise ConfigurationError("The template needs a {value} (or {}) placeholder where each value goes, "
                                 "e.g. 'Summarise: {value}'. Write {{ and }} for literal braces.")
    return template
