"""Prompt interpolation: simple references are filled, code and unknowns stay as written."""

from __future__ import annotations

import pytest

from nbllm.interpolate import interpolate


class Row:
    def __init__(self) -> None:
        self.city = "Paris"
        self.tags = {"lang": "fr", 2: "two"}

    @property
    def broken(self) -> str:
        raise RuntimeError("property failed")


class Unprintable:
    def __str__(self) -> str:
        raise ValueError("no text")


NS = {"name": "Ann", "n": 3, "row": Row(), "d": {"model": "m1", 3: "three"}, "items": ["a", "b", "c"],
      "key": "model", "bad": Unprintable()}


@pytest.mark.parametrize("template, expected", [
    ("hi {name}", "hi Ann"),
    ("{name} has {n} cats", "Ann has 3 cats"),
    ("{row.city}", "Paris"),
    ("{row.tags[lang]}", "fr"),
    ("{row.tags['lang']}", "fr"),
    ('{row.tags["lang"]}', "fr"),
    ("{row.tags[2]}", "two"),
    ("{items[-1]}", "c"),
    ("{d[key]}", "m1"),  # a bare name inside [] is that variable's value, as in an f-string
    ("{d[3]}", "three"),
])
def test_references_are_filled(template, expected):
    assert interpolate(template, NS) == expected


@pytest.mark.parametrize("template", [
    "{unknown}",
    "{name.nope}",
    "{items[9]}",
    "{d[missing]}",
    "{row.broken}",
    "{bad}",
    "{name.__class__}",
    "{n!r} {n:.2f} {n + 1} {len(items)}",
    "{ name }",
    "{}",
    "x = {k: v for k, v in pairs}",
    "s = {1, 2}; t = {n, name}",
    'f"{name=}"',
    "{__import__('os').system('true')}",
])
def test_anything_else_is_left_exactly_as_written(template):
    assert interpolate(template, NS) == template


def test_json_is_sent_unchanged():
    for text in ['{"a": 1}', '{"a": {"b": {"c": [1, {"d": 2}]}}}', '[{"x": {}}]', "{\n  \"k\": {\"v\": 1}\n}"]:
        assert interpolate(text, NS) == text


def test_doubled_braces_are_literal():
    assert interpolate("{{name}}", NS) == "{name}"
    assert interpolate('{{"a": 1}}', NS) == '{"a": 1}'
    assert interpolate("{{ {name} }}", NS) == "{ Ann }"
    assert interpolate("}}{{", NS) == "}{"


def test_references_inside_literal_code_are_filled():
    assert interpolate('{"user": {name}}', NS) == '{"user": Ann}'
    assert interpolate('def f():\n    return {"n": {n}}', NS) == 'def f():\n    return {"n": 3}'


def test_unbalanced_braces_never_raise():
    for text in ["{", "}", "{{{", "}}}", "{name", "name}", "{{name}", "{name}}}"]:
        assert isinstance(interpolate(text, NS), str)
    assert interpolate("{name", NS) == "{name"
    assert interpolate("{name}}}", NS) == "Ann}"


def test_an_empty_namespace_changes_nothing_but_escapes():
    assert interpolate("{a} {b.c} {{d}}", {}) == "{a} {b.c} {d}"
