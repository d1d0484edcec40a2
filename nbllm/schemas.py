"""Schemas for typed answers: a class from the notebook, or a quick form written inline.

`%%llm --schema Person` names a pydantic model, dataclass or TypedDict the user defined;
`--schema "name: str, age: int, tags: list[str] = []"` is the quick form, turned into a
pydantic model by `quick_model`. The quick form is *parsed* by a small tokenizer and
recursive-descent reader — never evaluated — because it comes from a cell's text, and the
magics' rule is that nothing written there is run as code. Names in it are looked up, not
executed: built-in types, or classes already in the notebook's namespace.

Grammar (a field's default is a literal; a field with a default may be left out):

    fields  := field ("," field)* [","]
    field   := (NAME | STRING) ":" type ["=" literal | "=" "[" "]"]
    type    := atom ("|" atom)*
    atom    := SCALAR | "None" | "list" ["[" type "]"] | "dict" ["[" "str" "," type "]"]
             | "Optional" "[" type "]" | "Literal" "[" literal ("," literal)* "]" | CLASS
    literal := STRING | NUMBER | True | False | None
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import difflib
import keyword
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Optional, Union

from .errors import ConfigurationError

__all__ = ["quick_model", "quick_type", "resolve_schema", "is_schema", "schema_name", "SCALARS", "NAME", "is_name",
           "is_class", "class_fields"]

NAME = r"[^\W\d]\w*(?:\.[^\W\d]\w*)*"
"""A (dotted) Python name: `Person`, `models.Person`. `--schema NAME` looks it up; anything else is a quick form."""

SCALARS: dict[str, Any] = {
    "str": str, "int": int, "float": float, "bool": bool, "date": _dt.date, "datetime": _dt.datetime,
}
"""Scalar type names of the quick form."""
_GENERIC = ("list", "dict", "Optional", "Literal")
_SPELLINGS = {"List": "list", "Dict": "dict", "typing.List": "list", "typing.Dict": "dict",
              "typing.Optional": "Optional", "typing.Literal": "Literal"}
KNOWN = (*SCALARS, *_GENERIC, "None")

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<name>""" + NAME + r""")
  | (?P<string>'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")
  | (?P<number>[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)
  | (?P<punct>[\[\],:|=])
""", re.VERBOSE)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "0": "\0"}
_NO_DEFAULT = object()


@dataclasses.dataclass(frozen=True)
class _Token:
    kind: str  # name | string | number | punct | end
    text: str
    at: int

    @property
    def value(self) -> Any:
        """A string token's text without its quotes (escapes \\n \\t \\' \\" \\\\ read; nothing evaluated)."""
        return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), "\\" + m.group(1)), self.text[1:-1])


def _tokens(text: str) -> list[_Token]:
    found: list[_Token] = []
    at = 0
    while at < len(text):
        match = _TOKEN.match(text, at)
        if match is None:
            quote = text[at] in "'\""
            what = "an unclosed quote" if quote else f"an unexpected {text[at]!r}"
            raise _problem(text, f"{what} at position {at + 1}")
        if match.lastgroup != "space":
            found.append(_Token(match.lastgroup or "", match.group(), at))
        at = match.end()
    found.append(_Token("end", "", len(text)))
    return found


def _problem(text: str, what: str) -> ConfigurationError:
    return ConfigurationError(f"Cannot read the schema {text!r}: {what}. Write fields such as "
                              "'name: str, age: int, tags: list[str]'.")


def is_name(text: str) -> bool:
    """Whether `text` is one (dotted) name, such as `Person` or `models.Person` (see NAME)."""
    return re.fullmatch(NAME, text) is not None


def is_class(value: Any) -> bool:
    """A class that pydantic can validate a JSON object into: a model, a dataclass or a TypedDict."""
    if not isinstance(value, type):
        return False
    from pydantic import BaseModel
    from typing_extensions import is_typeddict  # knows typing's and typing_extensions' TypedDicts

    return dataclasses.is_dataclass(value) or is_typeddict(value) or issubclass(value, BaseModel)


def class_fields(value: Any) -> list[tuple[str, str, Any]] | None:
    """(name, attribute, annotation) per field of a model, dataclass or TypedDict (None for any other
    type). `name` is the field's JSON name — a model's alias, as the quick form keeps `class` for
    the attribute `class_` — so tables and columns show what the answer's JSON says; `attribute`
    reads the value (a key of a TypedDict's dict)."""
    if not is_class(value):
        return None
    from pydantic import BaseModel

    if issubclass(value, BaseModel):
        return [(info.serialization_alias or name, name, info.annotation) for name, info in value.model_fields.items()]
    try:
        hints = typing.get_type_hints(value)
    except Exception:  # a forward reference that does not resolve: the field is still a column
        hints = {}
    names = [f.name for f in dataclasses.fields(value)] if dataclasses.is_dataclass(value) \
        else list(getattr(value, "__annotations__", hints))
    return [(name, name, hints.get(name, Any)) for name in names]


def is_schema(value: Any) -> bool:
    """Whether `value` can be an `output_type`: a model/dataclass/TypedDict class, a scalar type,
    or a typing form of them (`Literal[...]`, `list[X]`, `X | None`, `dict[str, X]`)."""
    if any(value is scalar for scalar in SCALARS.values()) or is_class(value):
        return True
    origin = typing.get_origin(value)
    return origin in (Literal, list, dict, Union, types.UnionType)


def schema_name(value: Any) -> str:
    """A short name for messages and display metadata (`Person`, `list[str]`, `Literal['a', 'b']`)."""
    if isinstance(value, type):
        return value.__name__
    return repr(value).replace("typing.", "")


class _Reader:
    """Reads tokens of one quick form; every problem is one ConfigurationError naming it."""

    def __init__(self, text: str, namespace: Mapping[str, Any] | None):
        self.text = text
        self.namespace = namespace or {}
        self.tokens = _tokens(text)
        self.at = 0
        self.field = ""  # the field being read, for messages

    # -- tokens -------------------------------------------------------------------
    @property
    def peek(self) -> _Token:
        return self.tokens[self.at]

    def take(self) -> _Token:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def accept(self, punct: str) -> bool:
        if self.peek.kind == "punct" and self.peek.text == punct:
            self.at += 1
            return True
        return False

    def expect(self, punct: str, after: str) -> None:
        if not self.accept(punct):
            raise self.error(f"expected {punct!r} after {after}, found {self._shown(self.peek)}")

    def error(self, what: str) -> ConfigurationError:
        return _problem(self.text, f"field {self.field}: {what}" if self.field else what)

    @staticmethod
    def _shown(token: _Token) -> str:
        return "the end" if token.kind == "end" else repr(token.text)

    # -- the forms ----------------------------------------------------------------
    def looks_like_fields(self) -> bool:
        """`name: …` or `"a name": …` starts the fields form; anything else is one type."""
        first, second = self.tokens[0], self.tokens[1] if len(self.tokens) > 1 else None
        return first.kind in ("name", "string") and second is not None and second.text == ":"

    def fields(self) -> dict[str, tuple[Any, Any]]:
        fields: dict[str, tuple[Any, Any]] = {}
        while self.peek.kind != "end":
            token = self.take()
            if token.kind not in ("name", "string") or "." in token.text:
                raise self.error(f"expected a field name, found {self._shown(token)}")
            name = token.value if token.kind == "string" else token.text
            if not name.strip():
                raise self.error("a field name is empty")
            self.field = name
            if name in fields:
                raise self.error("the field is given twice")
            self.expect(":", f"field {name}")
            annotation = self.type()
            default: Any = _NO_DEFAULT
            if self.accept("="):
                default = self.default(annotation)
            fields[name] = (annotation, default)
            self.field = ""
            if not self.accept(",") and self.peek.kind != "end":
                raise self.error(f"expected ',' before {self._shown(self.peek)}")
        if not fields:
            raise _problem(self.text, "it names no field")
        return fields

    def whole_type(self) -> Any:
        annotation = self.type()
        if self.peek.kind != "end":
            raise self.error(f"unexpected {self._shown(self.peek)} after the type")
        return annotation

    def type(self) -> Any:
        parts = [self.atom()]
        while self.accept("|"):
            parts.append(self.atom())
        return parts[0] if len(parts) == 1 else Union[tuple(parts)]  # noqa: UP007 (a runtime union of forms)

    def atom(self) -> Any:
        token = self.take()
        if token.kind != "name":
            raise self.error(f"expected a type, found {self._shown(token)}")
        name = _SPELLINGS.get(token.text, token.text)
        if name == "None":
            return type(None)
        if name in SCALARS:
            return SCALARS[name]
        if name == "Literal":
            self.expect("[", "Literal")
            values = [self.literal()]
            while self.accept(","):
                values.append(self.literal())
            self.expect("]", "the Literal values")
            return Literal[tuple(values)]
        if name == "Optional":
            self.expect("[", "Optional")
            inner = self.type()
            self.expect("]", "Optional's type")
            return Optional[inner]  # noqa: UP007
        if name == "list":
            if not self.accept("["):
                return list
            inner = self.type()
            self.expect("]", "list's item type")
            return list[inner]  # type: ignore[valid-type]
        if name == "dict":
            if not self.accept("["):
                return dict
            key = self.take()
            if key.text != "str":
                raise self.error(f"dict keys must be str (JSON object keys), not {self._shown(key)}")
            self.expect(",", "dict[str")
            inner = self.type()
            self.expect("]", "dict's value type")
            return dict[str, inner]  # type: ignore[valid-type]
        return self.named_class(token.text)

    def named_class(self, name: str, whole: bool = False) -> Any:
        """A model class from the namespace (looked up, never evaluated), else one error with the choices."""
        value = _lookup(name, self.namespace)
        if value is not None and is_schema(value):
            return value
        classes = sorted(k for k, v in self.namespace.items() if not k.startswith("_") and is_class(v))
        known = [*KNOWN, *classes]
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        if value is not None:
            what = f"{name!r} is a value of type {type(value).__name__}, not a type"
        else:
            what = f"unknown {'schema' if whole else 'type'} {name!r}"
        where = f" for field {self.field}" if self.field else ""
        todo = ": give a class defined in the notebook, or fields such as 'name: str, age: int'" if whole else ""
        raise ConfigurationError(f"{what}{where}{hint}{todo}; known: {', '.join(known)}.")

    def literal(self) -> Any:
        token = self.take()
        if token.kind == "string":
            return token.value
        if token.kind == "number":
            return float(token.text) if any(c in token.text for c in ".eE") else int(token.text)
        if token.kind == "name" and token.text in ("True", "False", "None"):
            return {"True": True, "False": False, "None": None}[token.text]
        raise self.error(f"expected a literal value ('text', a number, True, False or None), "
                         f"found {self._shown(token)}")

    def default(self, annotation: Any) -> Any:
        if self.accept("["):
            self.expect("]", "'[' (a default list can only be empty: [])")
            value: Any = []
        else:
            value = self.literal()
        from pydantic import TypeAdapter, ValidationError

        try:
            return TypeAdapter(annotation).validate_python(value)
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"]
        raise self.error(f"the default {value!r} does not fit {schema_name(annotation)} ({reason})")


def _lookup(name: str, namespace: Mapping[str, Any]) -> Any:
    """`Name`, `module.Name` or `Class.Inner` in the namespace, or None: attributes are read only
    from modules and classes (an instance's property could run code)."""
    first, *rest = name.split(".")
    value = namespace.get(first)
    for part in rest:
        if not isinstance(value, (types.ModuleType, type)) or part.startswith("_"):
            return None
        value = getattr(value, part, None)
    return value


def _python_name(name: str, taken: set[str]) -> str:
    """A field name pydantic can hold: keywords, `_x`, `model_*` and BaseModel's own attributes
    get a Python name of their own; the JSON keeps the name as written (an alias)."""
    from pydantic import BaseModel

    if (name.isidentifier() and not keyword.iskeyword(name) and not name.startswith(("_", "model_"))
            and not hasattr(BaseModel, name)):
        return name
    base = re.sub(r"\W", "_", name).strip("_") or "field"
    if base[0].isdigit() or keyword.iskeyword(base) or base.startswith("model_") or hasattr(BaseModel, base):
        base = f"f_{base}"
    candidate, n = base + "_", 2
    while candidate in taken:
        candidate, n = f"{base}_{n}", n + 1
    return candidate


def quick_model(text: str, namespace: Mapping[str, Any] | None = None, name: str = "Result") -> Any:
    """The pydantic model of a quick form such as `"name: str, age: int, tags: list[str] = []"`.

    Types: str, int, float, bool, date, datetime, `list[T]`, `dict[str, T]`, `Optional[T]`,
    `T | None`, `Literal['a', 'b']`, and model classes named in `namespace`. `= value` gives a
    field a literal default (so the answer may leave it out). Nothing in `text` is evaluated;
    a mistake is one ConfigurationError naming it.
    """
    reader = _Reader(_text(text), namespace)
    if not reader.looks_like_fields():
        raise _problem(reader.text, "expected 'name: type' first")
    return _model(reader.fields(), name)


def quick_type(text: str, namespace: Mapping[str, Any] | None = None) -> Any:
    """A quick form as an `output_type`: fields give a model (`quick_model`); one type such as
    `list[str]`, `Literal['pos', 'neg']` or `int | None` is that type."""
    reader = _Reader(_text(text), namespace)
    if reader.looks_like_fields():
        return _model(reader.fields(), "Result")
    first, second = reader.tokens[0], reader.tokens[1]
    if first.kind == "name" and second.kind in ("name", "string"):  # `age int`: a field without its colon
        raise _problem(reader.text, f"expected ':' after the field name {first.text!r}")
    return reader.whole_type()


def _text(text: Any) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ConfigurationError("The schema is empty: give a model class or fields such as 'name: str, age: int'.")
    return text.strip()


def _model(fields: dict[str, tuple[Any, Any]], name: str) -> Any:
    from pydantic import ConfigDict, Field, create_model

    definitions: dict[str, Any] = {}
    for written, (annotation, default) in fields.items():
        python = _python_name(written, set(definitions) | set(fields))
        if default is _NO_DEFAULT:
            info = Field(alias=written) if python != written else ...
        elif isinstance(default, list):
            info = Field(default_factory=list, alias=written if python != written else None)
        else:
            info = Field(default=default, alias=written if python != written else None)
        definitions[python] = (annotation, info)
    config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)
    return create_model(name, __config__=config, **definitions)


def resolve_schema(name_or_text: Any, namespace: Mapping[str, Any] | None = None) -> Any:
    """What `--schema X` means: a class (or typing form) already made, `X` named in the namespace,
    else the quick form of `X`. A name that is there but is no type is one error saying what it is."""
    if not isinstance(name_or_text, str):
        if is_schema(name_or_text):
            return name_or_text
        raise ConfigurationError(f"{name_or_text!r} is not a schema: give a pydantic model, dataclass or TypedDict "
                                 "class, a type such as list[str], or fields such as 'name: str, age: int'.")
    text = name_or_text.strip()
    namespace = namespace or {}
    if is_name(text) and _SPELLINGS.get(text, text) not in KNOWN:
        value = _lookup(text, namespace)
        if value is not None and is_schema(value):
            return value
        _Reader(text, namespace).named_class(text, whole=True)  # raises, naming what the name is and the choices
    return quick_type(text, namespace)
