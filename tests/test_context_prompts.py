"""Objects in prompts, end to end: `{fig}` / `{df}` / lists in `ask`, `stream`, `compare` and
`%%llm`, checked at a real local server that records request bodies — an image arrives as an
image part (never as text), what was sent is inspectable with placeholders, a text-only
provider refuses an image before any request, and a local server's refusal is put in words."""

from __future__ import annotations

import io
import json

import pytest

import nbllm
from nbllm.errors import ConfigurationError, ModelError, Unsuitable

from conftest import nbllm_shell, reset_nbllm, run_cell
from fakeserver import image_parts

import matplotlib.pyplot as plt
import pandas as pd
from PIL import Image


@pytest.fixture(autouse=True)
def _agg() -> None:
    plt.switch_backend("Agg")


def _figure(width: float = 8, height: float = 6, dpi: int = 100):
    fig, ax = plt.subplots(figsize=(width, height), dpi=dpi)
    ax.plot([1, 3, 2])
    return fig


def _sent_images(server) -> list[Image.Image]:
    bodies = [r["body"] for r in server.chat_requests()]
    return [Image.open(io.BytesIO(data)) for body in bodies for data in image_parts(body)]


def _openai_at(server, monkeypatch) -> None:
    """The openai provider, with a key, pointed at a local test server (its model names are what is tested)."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0000000000000000")
    monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")


def _user_content(server) -> list:
    body = server.chat_requests()[-1]["body"]
    return next(m for m in body["messages"] if m["role"] == "user")["content"]


def test_a_figure_in_ask_arrives_as_one_image_part(local_provider) -> None:
    fig = _figure()
    answer = nbllm.ask("Describe {fig} in one line.")
    content = _user_content(local_provider)
    assert [part["type"] for part in content] == ["text", "image_url", "text"]
    assert content[0]["text"] == "Describe " and content[2]["text"] == " in one line."
    (image,) = _sent_images(local_provider)
    assert image.format == "PNG"
    drawn = io.BytesIO()  # the figure as Jupyter's inline backend draws it (tight box, the figure's dpi)
    fig.savefig(drawn, format="png", bbox_inches="tight", dpi=fig.dpi)
    assert image.size == Image.open(drawn).size
    assert 600 < image.size[0] <= 800 and 450 < image.size[1] <= 600
    assert "base64" not in json.dumps(content[0]) and "Figure(" not in json.dumps(content)
    # What was sent is inspectable, with the image as a placeholder and never its bytes.
    assert answer.request is not None
    assert answer.request.prompt.startswith(f"Describe <image {image.size[0]}×{image.size[1]} png, ")
    assert len(answer.request.images) == 1
    history = nbllm.history()
    assert history["prompt"].iloc[-1] == answer.request.prompt
    assert "iVBOR" not in history.to_csv()  # no base64 PNG in the call log


def test_a_large_image_is_downscaled_to_the_longest_side(local_provider, monkeypatch) -> None:
    monkeypatch.setenv("NBLLM_MAX_IMAGE_SIDE", "400")
    reset_nbllm()
    big = Image.new("RGB", (2000, 1000), "red")
    nbllm.ask("What colour is {big}?")
    (image,) = _sent_images(local_provider)
    assert image.size == (400, 200)


def test_a_list_prompt_mixes_text_images_and_frames(local_provider) -> None:
    frame = pd.DataFrame({"city": ["Oslo", "Lima"], "people": [700_000, 10_000_000]})
    png = io.BytesIO()
    Image.new("RGB", (64, 32), "blue").save(png, format="PNG")
    nbllm.ask(["Compare the picture", png.getvalue(), "with this table:", frame])
    content = _user_content(local_provider)
    assert [part["type"] for part in content] == ["text", "image_url", "text"]
    assert "Oslo" in content[2]["text"] and "700000" in content[2]["text"].replace(",", "")
    assert _sent_images(local_provider)[0].size == (64, 32)


def test_raw_sends_the_text_as_written(local_provider) -> None:
    fig = _figure()
    nbllm.ask("Keep {fig} as written", raw=True)
    assert _user_content(local_provider) == "Keep {fig} as written"
    del fig


def test_a_frame_is_a_capped_summary_and_full_sends_it_all(local_provider) -> None:
    from nbllm.tokens import estimate

    frame = pd.DataFrame({"n": range(5000), "word": [f"w{i}" for i in range(5000)]})
    nbllm.ask("Summarise {frame}")
    summary = _user_content(local_provider)
    assert isinstance(summary, str) and "5000 rows" in summary.replace(",", "")
    assert estimate(summary) <= 2000 + estimate("Summarise ")
    nbllm.ask("All of {frame!full}")
    whole = _user_content(local_provider)
    assert "| 4999 " in whole and estimate(whole) > 2000


def test_a_text_only_model_refuses_an_image_before_any_request(fake_server, monkeypatch) -> None:
    _openai_at(fake_server, monkeypatch)
    monkeypatch.setenv("OPENAI_MODEL", "gpt-oss-20b")  # a text-only family
    reset_nbllm()
    fig = _figure()
    with pytest.raises(Unsuitable) as caught:
        nbllm.ask("Describe {fig}", provider="openai")
    message = str(caught.value)
    assert "gpt-oss-20b takes no images" in message and "1 image" in message
    assert "anthropic" in message or "-p " in message  # names a provider that would
    assert fake_server.chat_requests() == []
    del fig


def test_a_chain_passes_a_text_only_link_over_for_one_that_takes_images(local_provider, monkeypatch) -> None:
    _openai_at(local_provider, monkeypatch)
    reset_nbllm()
    fig = _figure()
    answer = nbllm.ask("Describe {fig}", provider="openai:gpt-oss-20b,lmstudio")
    assert answer.provider == "lmstudio"
    assert [f.provider for f in answer.fallbacks] == ["openai:gpt-oss-20b"]
    assert "takes no images" in answer.fallbacks[0].reason
    assert len(local_provider.chat_requests()) == 1  # only lmstudio was sent the prompt
    del fig


def test_a_local_server_refusing_the_image_is_reported_in_words(local_provider) -> None:
    local_provider.set(text_only=True)
    fig = _figure()
    with pytest.raises(ModelError) as caught:
        nbllm.ask("Describe {fig}")
    message = str(caught.value)
    assert "did not take the image" in message and "mmproj" in message
    assert "takes text only" in message
    assert len(local_provider.chat_requests()) == 1  # a refusal is not retried
    del fig


def test_a_stream_refuses_an_image_on_a_text_only_model_without_a_request(fake_server, monkeypatch) -> None:
    _openai_at(fake_server, monkeypatch)
    reset_nbllm()
    fig = _figure()
    stream = nbllm.stream("Describe {fig}", provider="openai:deepseek-chat", raise_errors=False)
    assert list(stream) == []
    assert stream.answer is not None and "takes no images" in (stream.answer.error or "")
    assert fake_server.chat_requests() == []
    del fig


def test_a_corrupt_image_is_one_line_before_anything_is_sent(local_provider) -> None:
    broken = b"\x89PNG\r\n\x1a\n" + b"not really a png"
    with pytest.raises(ConfigurationError) as caught:
        nbllm.ask("Look at {broken}")
    assert "\n" not in str(caught.value) and caught.value.__cause__ is None
    assert local_provider.chat_requests() == []


def test_the_replay_cache_tells_two_images_of_one_size_apart(local_provider) -> None:
    red, blue = Image.new("RGB", (32, 32), "red"), Image.new("RGB", (32, 32), "blue")
    first = nbllm.ask("Colour of {red}?", cache="record")
    second = nbllm.ask("Colour of {blue}?", cache="record")
    again = nbllm.ask("Colour of {red}?", cache="record")
    assert not first.cached and not second.cached and again.cached
    assert len(local_provider.chat_requests()) == 2


def test_compare_sends_the_image_to_each_provider(local_provider, monkeypatch, make_server) -> None:
    other = make_server()
    monkeypatch.setenv("OLLAMA_BASE_URL", other.url)
    reset_nbllm()
    fig = _figure(4, 3)
    table = nbllm.compare("Describe {fig}", providers=["lmstudio", "ollama"])
    assert table["error"].isna().all()
    assert len(_sent_images(local_provider)) == 1
    assert len([d for r in other.chat_requests() for d in image_parts(r["body"])]) == 1
    del fig


def test_cell_magic_sends_a_figure_and_err_as_text(local_provider) -> None:
    with nbllm_shell() as shell:
        run_cell(shell, "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
                        "fig, ax = plt.subplots(figsize=(5, 4), dpi=80)\nax.bar(['a', 'b'], [3, 5])")
        run_cell(shell, "1 / 0")
        run_cell(shell, "%%llm -o reply\nWhat does {fig} show? And why did this fail: {Err}")
        reply = shell.user_ns["reply"]
    content = _user_content(local_provider)
    assert [part["type"] for part in content] == ["text", "image_url", "text"]
    assert _sent_images(local_provider)[0].size[0] <= 400
    assert "ZeroDivisionError: division by zero" in content[2]["text"]
    assert "\x1b[" not in content[2]["text"]
    assert str(reply).startswith("Echo:")


def test_a_whole_table_beyond_the_models_context_is_refused_with_the_numbers(fake_server, monkeypatch) -> None:
    _openai_at(fake_server, monkeypatch)
    monkeypatch.setenv("OPENAI_MODEL", "gpt-4o-mini")  # 128,000 tokens in genai-prices' offline data
    reset_nbllm()
    frame = pd.DataFrame({"a": range(15_000), "b": [i * 0.5 for i in range(15_000)]})
    with pytest.raises(Unsuitable) as caught:
        nbllm.ask("All of it: {frame!full}", provider="openai")
    message = str(caught.value)
    assert "128,000" in message and "{df}" in message
    needed = int(message.split("needs about ")[1].split(" ")[0].replace(",", ""))
    assert needed > 128_000
    assert fake_server.chat_requests() == []
    nbllm.ask("The gist: {frame}", provider="openai")  # the summary fits and is sent
    assert len(fake_server.chat_requests()) == 1


def test_what_a_text_only_provider_is_known_as(monkeypatch) -> None:
    from nbllm import fits
    from nbllm.registry import get_registry
    from nbllm.request import Target

    registry = get_registry()

    def target(name: str, model: str) -> Target:
        return Target(registry.spec(name), registry.settings(name), model)

    assert fits.takes_images(target("embedded", "smollm2"), None) is False
    assert fits.takes_images(target("groq", "openai/gpt-oss-20b"), None) is False
    assert fits.takes_images(target("openai", "gpt-5-mini"), None) is True
    assert fits.takes_images(target("ollama", "llava"), None) is None  # unknown local model: tried
    assert fits.takes_images(target("openai", "gpt-5-mini"), type("M", (), {"profile": {
        "supports_image_input": False}})()) is False


def test_ask_async_reads_the_prompt_when_called_even_inside_gather(local_provider) -> None:
    import asyncio

    async def main() -> list:
        inner = "from the caller"
        return await asyncio.gather(nbllm.ask_async("g {inner}"), asyncio.ensure_future(nbllm.ask_async("t {inner}")))

    answers = asyncio.run(main())
    assert [a.request.prompt for a in answers] == ["g from the caller", "t from the caller"]


def test_one_object_is_a_prompt_and_none_is_empty(local_provider) -> None:
    fig = _figure(3, 2)
    nbllm.ask(fig)
    assert [part["type"] for part in _user_content(local_provider)] == ["image_url"]
    frame = pd.DataFrame({"a": [1, 2]})
    nbllm.ask(frame)
    assert "2 rows" in _user_content(local_provider)
    with pytest.raises(ConfigurationError, match="prompt is empty"):
        nbllm.ask(None)


def test_the_embedded_model_refuses_an_image_without_starting(monkeypatch) -> None:
    from nbllm.registry import get_registry

    started: list[str] = []

    real = get_registry().prepare

    async def never(name: str, start: bool = True):  # the embedded server must not be asked to start
        if start:
            started.append(name)
        return await real(name, start=False)

    monkeypatch.setattr(get_registry(), "prepare", never)
    fig = _figure(3, 2)
    with pytest.raises(Unsuitable, match="smollm2 takes no images"):
        nbllm.ask("Describe {fig}", provider="embedded")
    assert started == []


def test_a_value_that_breaks_while_read_is_one_line(local_provider) -> None:
    class Broken:
        def __str__(self) -> str:
            raise RuntimeError("no text for you")

    frame = pd.DataFrame({"x": [Broken()]})
    answer = nbllm.ask("Look at {frame}")  # a cell whose str() fails is shown as unprintable, not a crash
    assert "unprintable" in answer.request.prompt
    assert local_provider.chat_requests()


def test_config_limits_reach_the_python_api(local_provider) -> None:
    frame = pd.DataFrame({"n": range(3000)})
    with nbllm_shell() as shell:
        shell.run_line_magic("config", "LLMMagics.max_context_tokens = 120")
        shell.user_ns["frame"] = frame
        run_cell(shell, "import nbllm\nreply = nbllm.ask('Sum up {frame}')")
        small = shell.user_ns["reply"].request.prompt
    from nbllm.tokens import estimate

    assert estimate(small) <= 120 + estimate("Sum up ")
    assert estimate(nbllm.ask("Sum up {frame}").request.prompt) > 120 + estimate("Sum up ")  # unloaded: the default


def test_chat_memory_shows_a_turn_with_an_image(local_provider) -> None:
    chat = nbllm.conversation()
    chat.reset()
    fig = _figure(3, 2)
    nbllm.ask("What is {fig}?", chat=chat)
    (role, text), _ = chat.turns()
    assert role == "user" and text.startswith("What is <image png, ")


def test_the_call_log_keeps_a_huge_prompt_short(local_provider) -> None:
    from nbllm.store import MAX_STORED_PROMPT

    frame = pd.DataFrame({"a": range(20_000), "b": range(20_000)})
    answer = nbllm.ask("All: {frame!full}")
    assert len(answer.request.prompt) > MAX_STORED_PROMPT  # sent whole (a local model of unknown context)
    stored = nbllm.history(limit=1)["prompt"].iloc[0]
    assert len(stored) < MAX_STORED_PROMPT + 100 and stored.endswith("more characters not kept)")


def test_history_names_that_name_nothing_get_one_line_and_in_is_as_typed(local_provider) -> None:
    from IPython.utils.capture import capture_output

    with nbllm_shell() as shell:
        with capture_output():
            shell.run_cell("%llm_providers --status", store_history=True)
        number = shell.execution_count - 1
        with capture_output() as captured:
            shell.run_cell("%%llm\nWhat is {In[" + str(number) + "]} and {In[999]} and {Err[3]}", store_history=True)
        printed = captured.stdout + captured.stderr
    content = _user_content(local_provider)
    assert "%llm_providers --status" in content  # as typed, not get_ipython().run_line_magic(...)
    assert "run_line_magic" not in content
    assert "{In[999]}" in content and "{Err[3]}" in content  # left as written …
    assert "nothing there: {In[999]}, {Err[3]}" in printed  # … and said so in one line
    with pytest.warns(UserWarning, match=r"nothing there: \{frame\[9\]\}"):
        frame = {"a": 1}
        nbllm.ask("Look: {frame[9]}")
