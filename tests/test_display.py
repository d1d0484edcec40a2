"""The answer display: one display updated in place, throttled, final metadata; terminal printing."""

from __future__ import annotations

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from nbllm.display import AnswerView, CellError, Interrupted, convert, extract_code, footer, rich_frontend

META = {"provider": "lmstudio", "model": "m", "latency_ms": 12.3, "usage": {"input_tokens": 7, "output_tokens": 3},
        "cost_usd": None, "error": None}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def shell():
    return InteractiveShell.instance()


def _ids(outputs):
    return {o["transient"]["display_id"] for o in outputs}


def test_stream_is_one_display_updated_in_place_and_throttled(shell):
    clock = Clock()
    view = AnswerView("markdown", rich=True, interval=0.05, clock=clock)
    with capture_output() as cap:
        publisher = shell.display_pub
        for i in range(10):  # ten chunks within 10 ms: only the first is shown at once
            clock.now = i * 0.001
            view.add(f"w{i} ")
        clock.now = 0.2
        view.tick()  # idle: the held-back text appears
        view.finish(convert(view.text, "markdown"), META)
    outputs = publisher.outputs
    assert len(outputs) == 3
    assert len(_ids(outputs)) == 1
    assert [o["update"] for o in outputs] == [False, True, True]
    assert outputs[0]["data"]["text/markdown"] == "w0 "
    assert outputs[1]["data"]["text/markdown"] == "".join(f"w{i} " for i in range(10))
    assert outputs[-1]["metadata"] == {"nbllm": META}
    assert cap.stdout == ""


def test_updates_never_exceed_the_rate_but_the_last_text_is_always_shown(shell):
    clock = Clock()
    view = AnswerView("markdown", rich=True, interval=0.05, clock=clock)
    with capture_output():
        publisher = shell.display_pub
        for i in range(1000):  # 1000 chunks over one second
            clock.now = i * 0.001
            view.add("x")
        view.finish(convert(view.text, "markdown"), META)
    live = publisher.outputs[:-1]
    assert 15 <= len(live) <= 21  # at most one per 50 ms
    assert publisher.outputs[-1]["data"]["text/plain"] == "x" * 1000


def test_tick_without_pending_text_publishes_nothing(shell):
    view = AnswerView("markdown", rich=True, clock=Clock())
    with capture_output():
        publisher = shell.display_pub
        view.tick()
        view.add("a")
        view.tick()
    assert len(publisher.outputs) == 1


def test_final_display_carries_the_format_bundle_and_footer(shell):
    view = AnswerView("json", rich=True, show_footer=True, clock=Clock())
    with capture_output():
        publisher = shell.display_pub
        view.add('{"k": ')
        view.add("[1, 2]}")
        view.finish(convert(view.text, "json"), META)
    first, last = publisher.outputs
    assert first["data"] == {"text/plain": '{"k": '}
    assert last["data"]["application/json"] == {"k": [1, 2]}
    assert last["metadata"]["nbllm"]["model"] == "m"


def test_footer_goes_under_markdown_but_not_into_plain_text(shell):
    view = AnswerView("markdown", rich=True, show_footer=True)
    with capture_output():
        publisher = shell.display_pub
        view.finish(convert("answer", "markdown"), META, streamed=False)
    (only,) = publisher.outputs
    assert only["data"]["text/plain"] == "answer"
    assert only["data"]["text/markdown"].startswith("answer\n\n<sub>lmstudio · m · 7→3 tokens · 12 ms")


def test_nothing_displayed_when_nothing_arrived(shell):
    view = AnswerView("markdown", rich=True)
    with capture_output():
        publisher = shell.display_pub
        view.finish(None, {**META, "error": "down"})
    assert publisher.outputs == []


def test_terminal_prints_chunks_as_they_arrive(capsys):
    view = AnswerView("markdown", rich=False, show_footer=True)
    view.add("Hel")
    assert capsys.readouterr().out == "Hel"
    view.add("lo")
    assert capsys.readouterr().out == "lo"
    view.finish(convert("Hello", "markdown"), META)
    assert capsys.readouterr().out == "\n[lmstudio · m · 7→3 tokens · 12 ms]\n"


def test_terminal_without_streaming_prints_the_converted_value(capsys):
    AnswerView("json", rich=False).finish(convert('{"a": 1}', "json"), META, streamed=False)
    assert capsys.readouterr().out == "{'a': 1}\n"


def test_rich_frontend_is_false_in_a_terminal_shell_and_true_when_captured(shell):
    assert rich_frontend(None) is False
    assert rich_frontend(shell) is False
    with capture_output():
        assert rich_frontend(shell) is True


@pytest.mark.parametrize("text, code", [
    ("print(1)", "print(1)"),
    ("Here:\n```python\nx = 1\n```\nand\n```\ny = 2\n```", "x = 1\n\ny = 2"),
    ("```py\nunfinished = True\n", "unfinished = True"),
])
def test_extract_code(text, code):
    assert extract_code(text) == code


def test_convert_formats():
    assert convert("# hi", "markdown").bundle == {"text/markdown": "# hi", "text/plain": "# hi"}
    assert convert("<b>x</b>", "html").bundle["text/html"] == "<b>x</b>"
    assert convert("plain", "text").bundle == {"text/plain": "plain"}
    assert convert("```json\n[1, 2]\n```", "json").value == [1, 2]
    code = convert("```python\nx = 1\n```", "code")
    assert code.value == "x = 1" and code.bundle["text/markdown"] == "```python\nx = 1\n```"


def test_convert_json_failure_keeps_the_text_and_says_why():
    result = convert("Sure! {oops", "json")
    assert result.value == "Sure! {oops" and result.bundle == {"text/plain": "Sure! {oops"}
    assert result.problem.startswith("the answer is not valid JSON (")


def test_footer_skips_unknown_parts():
    assert footer({"provider": "p", "model": "m", "usage": {}, "latency_ms": 0}) == "p · m"


def test_errors_render_as_one_line():
    assert CellError("lmstudio at http://x: HTTP 500")._render_traceback_() == [
        "nbllm: lmstudio at http://x: HTTP 500"]
    assert isinstance(Interrupted("stop"), KeyboardInterrupt)
    assert Interrupted("stop")._render_traceback_() == ["nbllm: stop"]


class _CountingPublisher:
    """Counts the characters of every display published, keeping only the last bundle
    (a 5 MB answer republished a hundred times would otherwise hold gigabytes)."""

    def __init__(self, shell) -> None:
        self.publisher = shell.display_pub
        self.chars = 0
        self.count = 0
        self.sizes: list[int] = []
        self.last: dict = {}
        self.publisher.publish = self.publish

    def publish(self, data, metadata=None, *args, **kwargs) -> None:
        size = sum(len(v) for v in data.values() if isinstance(v, str))
        self.chars += size
        self.count += 1
        self.sizes.append(len(data.get("text/plain", "")))
        self.last = data


def _chunks(total: int, seed: int) -> list[str]:
    """`total` characters in chunks of 1 to 4096 characters (log-uniform: many small ones)."""
    import random

    rng = random.Random(seed)
    chunks, size = [], 0
    while size < total:
        n = min(int(2 ** rng.uniform(0, 12)), total - size)
        chunks.append(chr(ord("a") + len(chunks) % 26) * n)
        size += n
    return chunks


FIVE_MB = 5 * 1024 * 1024
LINEAR = 8
"""Total characters published for a streamed answer, at most this many times its final size."""


@pytest.mark.parametrize("chars_per_second", [2e5, 1e6])
def test_a_long_stream_publishes_linear_bytes_and_ends_with_the_whole_text(shell, chars_per_second):
    """Streaming 5 MB (over 5 or 25 s: 100 or 500 throttle windows) costs a few times the
    answer, not the answer per update; the last display is the whole text."""
    clock = Clock()
    view = AnswerView("markdown", rich=True, interval=0.05, clock=clock)
    chunks = _chunks(FIVE_MB, seed=7)
    with capture_output():
        counter = _CountingPublisher(shell)
        for chunk in chunks:
            clock.now += len(chunk) / chars_per_second
            view.add(chunk)
        view.finish(convert(view.text, "markdown"), META)
    final = "".join(chunks)
    assert counter.last["text/plain"] == final
    assert counter.last["text/markdown"] == final
    final_size = sum(len(v) for v in counter.last.values() if isinstance(v, str))
    assert counter.chars <= LINEAR * final_size, (counter.count, counter.chars / final_size)
    assert counter.count >= 10  # the display still moves while it grows


def test_a_long_stream_stays_linear_even_if_every_chunk_passes_the_throttle(shell):
    clock = Clock()
    view = AnswerView("text", rich=True, interval=0.05, clock=clock)
    with capture_output():
        counter = _CountingPublisher(shell)
        for i in range(FIVE_MB // 4096):
            clock.now += 1.0  # a slow stream: the time throttle never holds anything back
            view.add("y" * 4096)
        view.finish(None, META)
    final = FIVE_MB // 4096 * 4096
    assert counter.sizes[-1] == final
    assert sum(counter.sizes) <= LINEAR * final
    live = counter.sizes[:-1]
    large = [s for s in live if s >= 64 * 1024]
    assert all(b >= a * 1.25 for a, b in zip(large, large[1:]))  # grown by a quarter each time
    assert len(live) > 64 // 4  # every chunk shown while the text was small


def test_a_normal_answer_updates_as_before(shell):
    """Below the large-text size nothing changes: the first chunk at once, then one
    update per interval."""
    clock = Clock()
    view = AnswerView("markdown", rich=True, interval=0.05, clock=clock)
    with capture_output():
        counter = _CountingPublisher(shell)
        for i in range(400):  # 400 tokens of ~20 characters over 4 s
            clock.now = i * 0.01
            view.add("word " * 4)
            if i == 0:
                assert counter.count == 1
    assert 4 / 0.06 <= counter.count <= 4 / 0.05 + 1  # about one per interval, none held back for size
