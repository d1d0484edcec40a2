"""What settings values may be: parsers, the table of every variable, the config file's shape.

Text in, a typed value out, or `BadValue` saying which form is accepted. Why a module of
its own: every variable of one type must accept the same words and explain a bad value
in the same way (`NBLLM_LOG=maybe` and `OLLAMA_ENABLED=maybe` get the same sentence), and
that sentence is nbllm's ("expected a number between 0 and 2"), never Python's ("could
not convert string to float: 'hot'"). `config` reads the sources and names the variable,
the value and what is used instead around it; it re-exports what callers use from here.
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from .errors import BadValue, scrub

__all__ = [
    "BadValue", "TRUE_WORDS", "FALSE_WORDS", "BOOL_FORM", "to_bool", "to_text", "to_url", "to_urls", "split_urls",
    "to_choice", "to_path",
    "to_args", "to_number", "number_form", "show_number", "check_number", "option_number", "Secret", "Field", "FIELDS",
    "Variable", "GLOBALS", "validate_user_config", "is_name", "server_root", "openai_base", "host_to_url", "decode",
    "os_reason",
]


TRUE_WORDS = ("1", "true", "yes", "on", "y", "t")
FALSE_WORDS = ("0", "false", "no", "off", "n", "f")
BOOL_FORM = "expected one of true/false, yes/no, on/off, 1/0"


def to_bool(text: str) -> bool:
    """The one boolean parser: every `*_ENABLED` and `NBLLM_LOG` accept exactly these words."""
    low = text.strip().lower()
    if low in TRUE_WORDS:
        return True
    if low in FALSE_WORDS:
        return False
    raise BadValue(BOOL_FORM)


def to_text(text: str) -> str:
    """Any non-blank text (a model or provider name), stripped."""
    text = text.strip()
    if not text:
        raise BadValue("expected a name")
    return text


def to_url(text: str) -> str:
    """An http(s) URL without a trailing slash (`http://gpu-box:1234/v1/` → `…/v1`)."""
    text = text.strip().rstrip("/")
    try:
        parts = urlsplit(text)
        ok = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError:
        ok = False
    if not ok:
        raise BadValue("expected an http:// or https:// URL such as http://localhost:1234/v1")
    return text


def split_urls(text: str) -> tuple[tuple[str, ...], tuple[tuple[str, BadValue], ...]]:
    """A comma list of URLs (a fleet of servers) → the good ones in order, duplicates and
    empty entries dropped, and each bad entry with why it is bad.

    Lenient on purpose: settings keep the servers that are fine and warn about the others,
    so one typo does not take a whole fleet down.
    """
    good: list[str] = []
    bad: list[tuple[str, BadValue]] = []
    for part in text.split(","):
        if not part.strip():
            continue
        try:
            url = to_url(part)
        except BadValue as exc:
            bad.append((part.strip(), exc))
            continue
        if url not in good:
            good.append(url)
    return tuple(good), tuple(bad)


def to_urls(text: str) -> tuple[str, ...]:
    """A comma list of URLs, strictly (a face's `--base-url`): every entry must be one."""
    good, bad = split_urls(text)
    if bad:
        entry, why = bad[0]
        raise BadValue(f"{entry!r} is not a URL: {why}" if len(good) + len(bad) > 1 else str(why))
    if not good:
        raise BadValue("expected an http:// or https:// URL such as http://localhost:1234/v1")
    return good


def to_choice(text: str, choices: Sequence[str]) -> str:
    """One of `choices` (compared without case)."""
    low = text.strip().lower()
    if low not in choices:
        raise BadValue("expected one of " + ", ".join(choices))
    return low


def to_path(text: str) -> Path:
    """A path to a file (`~` expanded); a directory or a NUL character is not one."""
    text = text.strip()
    if "\x00" in text:
        raise BadValue("expected a path to a file (it contains a NUL character)")
    path = Path(text).expanduser()
    if path.is_dir():
        raise BadValue(f"expected a path to a file, and {path} is a directory")
    return path


def to_args(text: str) -> str:
    """Command-line options (`--n_ctx 4096`): kept as text, checked to split like a shell line."""
    try:
        shlex.split(text)
    except ValueError:
        raise BadValue("expected options as on a command line, such as --n_ctx 4096 (a quote is not closed)"
                       ) from None
    return text.strip()


def server_root(url: str) -> str:
    """`http://host:1234/v1/` → `http://host:1234` (local servers are addressed both ways)."""
    url = url.rstrip("/")
    return url[:-3] if url.endswith("/v1") else url


def openai_base(url: str) -> str:
    """The OpenAI-compatible API base (`…/v1`) of a local server."""
    return server_root(url) + "/v1"


def host_to_url(value: str, default_port: int | None) -> str:
    """OLLAMA_HOST style values (`0.0.0.0`, `host:port`, `http://host`) → a URL."""
    value = value.strip()
    if "://" not in value:
        value = "http://" + value
    try:
        parts = urlsplit(value)
        port = parts.port or default_port
    except ValueError:  # a port that is not a number in 0..65535
        raise BadValue("expected a host, host:port or an http:// URL, such as 127.0.0.1:11434") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise BadValue("expected a host, host:port or an http:// URL, such as 127.0.0.1:11434")
    host = parts.hostname or "localhost"
    if host in ("0.0.0.0", "::", ""):
        host = "localhost"
    netloc = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{netloc}" + (f":{port}" if port else "")


def show_number(x: float | None) -> str:
    """`1000000` → `1,000,000`, `0.5` → `0.5`: how limits read in messages."""
    if x is None:
        return ""
    return f"{int(x):,}" if float(x).is_integer() else f"{x:g}"


def number_form(low: float | None, high: float | None, whole: bool = False, low_open: bool = False,
                unit: str = "") -> str:
    """"a number between 0 and 2", "a whole number of seconds above 0", …"""
    what = ("a whole number" if whole else "a number") + (f" of {unit}" if unit else "")
    if low is not None and high is not None and not low_open:
        return f"{what} between {show_number(low)} and {show_number(high)}"
    if low is not None and high is not None:
        return f"{what} above {show_number(low)} and at most {show_number(high)}"
    if low is not None:
        return f"{what} above {show_number(low)}" if low_open else f"{what} of at least {show_number(low)}"
    if high is not None:
        return f"{what} of at most {show_number(high)}"
    return what


def to_number(text: str, low: float | None = None, high: float | None = None, whole: bool = False,
              low_open: bool = False, unit: str = "") -> float | int:
    """A finite number (an int when `whole`) within the limits; `low_open` excludes `low` itself."""
    form = "expected " + number_form(low, high, whole, low_open, unit)
    try:
        value: float | int = int(text.strip()) if whole else float(text.strip())
    except ValueError:
        raise BadValue(form) from None
    if not math.isfinite(value):
        raise BadValue(form)
    too_low = low is not None and (value <= low if low_open else value < low)
    if too_low or (high is not None and value > high):
        raise BadValue(form)
    return value


def check_number(value: object, low: float | None, high: float | None, whole: bool) -> None:
    """A per-call number (`temperature=5`) under the rules of its variable; ValueError says "must …"
    with the accepted form (`temperature="hot"`: "must be a number between 0 and 2")."""
    form = number_form(low, high, whole)
    if whole and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"must be {form}")
    if not whole:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"must be {form}")
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number{form.removeprefix('a number')}")
    if (low is not None and value < low) or (high is not None and value > high):  # type: ignore[operator]
        raise ValueError(f"must be between {show_number(low)} and {show_number(high)}")


def option_number(low: float | None = None, high: float | None = None, whole: bool = False,
                  unit: str = "", low_open: bool = False) -> Callable[[str], float | int]:
    """An argparse `type=` for a magic's number option (`-t`, `--max-tokens`): text that is not a number is
    said in nbllm's words with the accepted form ("expected a number between 0 and 2, got 'hot'"), not
    argparse's ("invalid float value: 'hot'"). A number out of range passes: the call's own check says
    which option and which range, as it does for `nbllm.ask(temperature=5)`."""
    import argparse

    form = "expected " + number_form(low, high, whole, low_open, unit)

    def parse(text: str) -> float | int:
        try:
            return to_number(text, whole=whole)
        except BadValue:
            raise argparse.ArgumentTypeError(f"{form}, got {text!r}") from None

    parse.__name__ = "whole number" if whole else "number"  # what argparse names in its own messages
    return parse


# ---- a key --------------------------------------------------------------------------


class Secret:
    """Holds a key so that repr/str/format never show it; `.get()` returns it."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self):  # pickling would write the key to disk
        raise TypeError("nbllm Secret values cannot be pickled")


# ---- what each variable accepts ---------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One `{PROVIDER}_{SUFFIX}` variable: its kind ("bool", "text", "number", "whole", "url", "urls": a comma
    list of URLs, parsed to a tuple) and limits."""

    suffix: str
    attr: str
    kind: str
    low: float | None = None
    high: float | None = None
    doc: str = ""

    def parse(self, text: str) -> Any:
        """The typed value of `text`; `BadValue` ("expected …") otherwise."""
        if self.kind in ("number", "whole"):
            return to_number(text, self.low, self.high, whole=self.kind == "whole")
        return {"bool": to_bool, "url": to_url, "urls": to_urls}.get(self.kind, to_text)(text)

    def check(self, value: Any) -> Any:
        """The value if it is allowed (a per-call option gets the same rules as the variable)."""
        if self.kind in ("number", "whole"):
            check_number(value, self.low, self.high, whole=self.kind == "whole")
        return value


FIELDS: tuple[Field, ...] = (
    Field("ENABLED", "enabled", "bool", doc="turn the provider on/off"),
    Field("MODEL", "model", "text", doc="model id"),
    Field("WEIGHT", "weight", "number", 0.0, 1.0, doc="vote weight in consensus"),
    Field("MAX_TOKENS", "max_tokens", "whole", 1, 1_000_000, doc="answer length cap"),
    Field("TEMPERATURE", "temperature", "number", 0.0, 2.0, doc="sampling temperature"),
    Field("TIMEOUT", "timeout", "number", 0.001, 3600.0, doc="seconds per request"),
    Field("MAX_RETRIES", "max_retries", "whole", 0, 20, doc="retries on 429/5xx"),
    Field("BASE_URL", "base_url", "urls", doc="server address; a comma list is a fleet of servers"),
    Field("PRICE_INPUT", "price_input", "number", 0.0, 100_000.0, doc="USD per million input tokens (declared)"),
    Field("PRICE_OUTPUT", "price_output", "number", 0.0, 100_000.0, doc="USD per million output tokens (declared)"),
)


@dataclass(frozen=True)
class Variable:
    """One `NBLLM_*` variable: the `GlobalSettings` field it sets, its parser, what replaces a bad value."""

    name: str
    attr: str
    parse: Callable[[str], Any]
    instead: str


_seconds = partial(to_number, low=0, low_open=True, unit="seconds")
MAX_CONTEXT_TOKENS = 2000
"""The default token cap of a `{df}` summary in a prompt."""
MAX_IMAGE_SIDE = 1568
"""The default longest side of an image sent (Anthropic's recommended size; OpenAI and Gemini tile below it too)."""
GLOBALS: dict[str, Variable] = {v.name: v for v in (
    Variable("NBLLM_PROVIDER", "provider", to_text, "auto"),  # models keep their case: `parse_chain` lowers names
    Variable("NBLLM_MODEL", "model", to_text, "the provider's own model"),
    Variable("NBLLM_HEALTH_TIMEOUT", "health_timeout", partial(_seconds, high=120), "the default 2 seconds"),
    Variable("NBLLM_LOG", "log", to_bool, "the default (on)"),
    Variable("NBLLM_HISTORY", "history", to_path, "the default file in nbllm's user data directory"),
    Variable("NBLLM_CACHE", "cache", to_path, "the default file in nbllm's user data directory"),
    Variable("NBLLM_JOBS", "jobs", to_path, "the default file in nbllm's user data directory"),
    Variable("NBLLM_CACHE_MODE", "cache_mode", partial(to_choice, choices=("record", "replay", "off")), "'off'"),
    Variable("NBLLM_EMBEDDED_MODEL", "embedded_model", to_path, "the bundled model (SmolLM2)"),
    Variable("NBLLM_EMBEDDED_ARGS", "embedded_args", to_args, "no extra options"),
    Variable("NBLLM_EMBEDDED_START_TIMEOUT", "embedded_start_timeout", _seconds, "the default 30 seconds"),
    # The embedded provider's own, named like its EMBEDDED_BASE_URL: unset, each server start draws a seed.
    Variable("EMBEDDED_SEED", "embedded_seed", partial(to_number, low=0, high=2**32 - 2, whole=True),
             "a new random seed each time its server starts"),
    Variable("NBLLM_CONFIG", "config", to_path, "the default file in nbllm's user config directory"),
    Variable("NBLLM_MAX_CONTEXT_TOKENS", "max_context_tokens", partial(to_number, low=50, high=1_000_000, whole=True),
             f"the default {MAX_CONTEXT_TOKENS}"),
    Variable("NBLLM_MAX_IMAGE_SIDE", "max_image_side", partial(to_number, low=64, high=8192, whole=True, unit="pixels"),
             f"the default {MAX_IMAGE_SIDE}"),
)}


# ---- the user config file and other settings files -----------------------------------

_SHAPE = '{"disabled": [provider names], "default": {"provider": name, "model": name or null}}'


def _kind(value: Any) -> str:
    """A JSON value in words, for messages about the config file."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text {json.dumps(value)}"
    return "a list" if isinstance(value, list) else "an object"


def is_name(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def validate_user_config(data: Any, path: Path | str = "the config file") -> tuple[dict[str, Any], str | None]:
    """The usable part of a parsed config file, and one sentence about what was ignored (or None).

    Bad entries are dropped, good ones kept; keys nbllm does not know are kept as they
    are (a newer version may have written them).
    """
    if not isinstance(data, dict):
        return {}, scrub(f"nbllm: ignoring config file {path}: it holds {_kind(data)}, where an object shaped "
                          f"{_SHAPE} is expected.")
    clean, wrong = dict(data), []
    if "disabled" in data:
        disabled = data["disabled"]
        if not isinstance(disabled, list):
            del clean["disabled"]
            wrong.append(f'"disabled" is {_kind(disabled)}, expected a list of provider names such as ["ollama"]')
        else:
            clean["disabled"] = [n.strip().lower() for n in disabled if is_name(n)]
            if len(clean["disabled"]) < len(disabled):
                bad = ", ".join(_kind(n) for n in disabled if not is_name(n))
                wrong.append(f'"disabled" holds {bad}, expected only provider names')
    default = data.get("default")
    if default is not None and not (isinstance(default, dict) and is_name(default.get("provider"))):
        del clean["default"]
        if isinstance(default, dict):
            got = _kind(default["provider"]) if "provider" in default else "missing"
            wrong.append(f'"default"."provider" is {got}, expected a provider name (so "default" is ignored)')
        else:
            wrong.append(f'"default" is {_kind(default)}, expected {{"provider": name, "model": name or null}}')
    elif default is not None and default.get("model") is not None and not isinstance(default["model"], str):
        clean["default"] = {**default, "model": None}
        wrong.append(f'"default"."model" is {_kind(default["model"])}, expected a model name or null')
    if not wrong:
        return clean, None
    return clean, scrub(f"nbllm: config file {path}: " + "; ".join(wrong) + ". Those entries are ignored and "
                         "the rest is used; fix the file, or save the choice again (--save).")


def decode(data: bytes, what: str) -> tuple[str | None, str | None]:
    """Text of a settings file, or why it is not UTF-8 (in words, with the offending byte)."""
    skip = 3 if data.startswith(b"\xef\xbb\xbf") else 0  # a byte-order mark is allowed (Windows editors)
    try:
        return data[skip:].decode("utf-8"), None
    except UnicodeDecodeError as exc:
        at = skip + exc.start
        return None, (f"nbllm: {what} is not UTF-8 text (byte 0x{data[at]:02x} at position {at}); "
                      "ignoring it — save it as UTF-8.")


def os_reason(exc: OSError) -> str:
    """Why a settings file cannot be read, in a few words."""
    if isinstance(exc, IsADirectoryError):
        return "it is a directory"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return (exc.strerror or "it cannot be read").lower()


