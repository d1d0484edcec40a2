"""`nbllm.estimate` / `estimate_prompt` / `%%llm --estimate`: the cost before anything is sent.

The fake server (tests/fakeserver.py) has no tokenize endpoint, so it checks routing, the
tokenizer-estimate fallback and that no chat request is ever made; a small server below
speaks llama.cpp's and vLLM's tokenize dialects (one token per word); the Anthropic count
endpoint is mocked with respx; the embedded model checks the ±10% promise against what
the real server reports as `usage.prompt_tokens`.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conftest import nbllm_shell, reset_nbllm, run_cell

import nbllm
from nbllm import counting, estimates, tokens
from nbllm.errors import ConfigurationError
from nbllm.estimates import Estimate, estimate, estimate_prompt


# ---- a server with a tokenizer: llama.cpp's or vLLM's dialect ---------------------------------


class TokenizerServer:
    """llama-server (`dialect="llama.cpp"`) or vLLM (`"vLLM"`): one token per whitespace-separated word;
    a chat template of `<|sys|> S <|user|> U <|assistant|>`. Counts every request it gets."""

    def __init__(self, dialect: str):
        self.dialect = dialect
        self.requests: list[tuple[str, str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                server.requests.append(("GET", self.path, None))
                if self.path == "/health":
                    return self._send(200, {"status": "ok"})
                if self.path == "/v1/models":
                    return self._send(200, {"object": "list", "data": [{"id": "tiny", "object": "model"}]})
                self._send(404, {"error": "no route"})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                server.requests.append(("POST", self.path, body))
                self._send(*server.answer(self.path, body))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @staticmethod
    def template(messages: list[dict[str, str]]) -> str:
        parts = [f"<|{m['role'][:4]}|> {m['content']}" for m in messages]
        return " ".join(parts) + " <|assistant|>"

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        if path.endswith("/chat/completions"):
            return 500, {"error": "an estimate must never get here"}
        if self.dialect == "llama.cpp":
            if path == "/apply-template":
                return 200, {"prompt": self.template(body["messages"])}
            if path == "/tokenize" and "content" in body:
                words = body["content"].split()
                return 200, {"tokens": list(range(len(words) + (1 if body.get("add_special") else 0)))}
        if self.dialect == "vLLM" and path == "/tokenize" and "model" in body:
            if "messages" in body:
                return 200, {"count": len(self.template(body["messages"]).split()), "max_model_len": 4096}
            if "prompt" in body:
                return 200, {"count": len(body["prompt"].split()), "tokens": [], "max_model_len": 4096}
        return 404, {"error": f"no route {path}"}

    def posts(self, path: str) -> list[Any]:
        return [body for method, p, body in self.requests if method == "POST" and p == path]

    def __enter__(self) -> "TokenizerServer":
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def words(text: str) -> int:
    return len(text.split())


# ---- routing, the fallback estimate, nothing sent -----------------------------------------------


def test_a_list_is_estimated_and_nothing_is_sent(local_provider):
    values = ["the first review", None, "a second, longer review of the product"]
    result = estimate(values, "Summarise: {value}", max_tokens=64)
    assert isinstance(result, Estimate)
    assert (result.provider, result.prompts, result.skipped) == ("lmstudio", 2, 1)
    assert result.counts[1] is None  # the missing input is not counted
    expected = [tokens.estimate(f"Summarise: {v}") for v in (values[0], values[2])]
    assert result.counts[0] > expected[0] and result.counts[2] > expected[1]  # the chat's framing counts too
    assert result.input_tokens == result.counts[0] + result.counts[2]
    assert result.input_method == "tokenizer estimate, conservative"  # the fake server has no tokenizer
    assert (result.output_tokens_expected, result.output_tokens_max, result.output_basis) == (64, 64, "max_tokens")
    assert (result.usd_low, result.usd_high, result.price_source) == (0.0, 0.0, "local")
    assert local_provider.chat_requests() == []
    text = repr(result)
    assert "2 prompts (1 missing, skipped)" in text and "64 output tokens each" in text and "$0 (local)" in text


def test_the_providers_max_tokens_is_the_ceiling(local_provider, monkeypatch):
    monkeypatch.setenv("LMSTUDIO_MAX_TOKENS", "300")
    reset_nbllm()
    assert estimate(["a"], "{value}").output_tokens_max == 300
    assert estimate(["a"], "{value}", max_tokens=20).output_tokens_max == 20


def test_a_dataframe_template_and_its_missing_rows(local_provider):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"title": ["Great", None, "Bad", None], "body": ["loved it", None, None, "meh"]},
                         index=["r1", "r2", "r3", "r4"])
    result = estimate(frame, "Title: {title}\nReview: {body}", max_tokens=10)
    assert result.prompts == 3 and result.skipped == 1  # r2 has nothing at all: not sent
    assert result.counts[1] is None and all(c is not None for i, c in enumerate(result.counts) if i != 1)
    table = result.frame()
    assert list(table.index) == ["r1", "r2", "r3", "r4"]
    assert table["input_tokens"].isna().tolist() == [False, True, False, False]
    assert int(table["input_tokens"].sum()) == result.input_tokens
    assert local_provider.chat_requests() == []


def test_bad_inputs_are_one_line_each(local_provider):
    with pytest.raises(ConfigurationError, match="takes a list"):
        estimate(42, "{value}")
    with pytest.raises(ConfigurationError, match=r"\{value\}"):
        estimate(["a"], "no placeholder")
    pd = pytest.importorskip("pandas")
    with pytest.raises(ConfigurationError, match="no column"):
        estimate(pd.DataFrame({"a": [1]}), "{b}")
    with pytest.raises(ConfigurationError, match="unknown option"):
        estimate(["a"], "{value}", colour="red")
    assert local_provider.chat_requests() == []


def test_no_inputs_at_all(local_provider):
    result = estimate([None, None], "{value}")
    assert (result.prompts, result.skipped, result.input_tokens) == (0, 2, 0)
    assert result.usd_high == 0.0


def test_estimate_prompt_fills_names_from_the_callers_variables(local_provider):
    report = "word " * 200
    filled = estimate_prompt("Summarise {report}")
    raw = estimate_prompt("Summarise {report}", raw=True)
    assert filled.input_tokens >= raw.input_tokens + 190  # the 200 words were put in the prompt
    assert filled.prompts == 1 and local_provider.chat_requests() == []
    del report


def test_a_system_prompt_counts(local_provider):
    plain = estimate(["hello"], "{value}")
    system = estimate(["hello"], "{value}", system="You are a careful reviewer of product reviews.")
    assert system.input_tokens > plain.input_tokens


def test_an_output_type_adds_its_schema(local_provider):
    from pydantic import BaseModel

    class Review(BaseModel):
        sentiment: str
        stars: int
        summary: str

    plain = estimate(["great"], "{value}")
    typed = estimate(["great"], "{value}", output_type=Review)
    assert typed.input_tokens > plain.input_tokens + 10
    assert any("schema" in note for note in typed.notes)
    assert local_provider.chat_requests() == []


# ---- output tokens: max_tokens, then the observed mean --------------------------------------------


def test_the_observed_mean_replaces_max_tokens_after_five_answers(local_provider):
    prompts = ["one", "two words", "three words here", "four words in all", "five words in this one"]
    for prompt in prompts[:4]:
        nbllm.ask(prompt, max_tokens=50)
    before = estimate(["x"], "{value}", max_tokens=50)
    assert (before.output_tokens_expected, before.output_basis) == (50, "max_tokens")
    nbllm.ask(prompts[4], max_tokens=50)
    after = estimate(["x", "y"], "{value}", max_tokens=50)
    logged = nbllm.history(limit=None)["output_tokens"].astype(float)
    assert len(logged) == 5
    assert after.output_basis == "observed mean of 5 answers"
    assert after.output_tokens_expected == round(logged.mean()) < 50
    assert after.output_tokens_max == 50
    chats = len(local_provider.chat_requests())
    assert chats == 5  # the five asks; the estimates sent nothing


def test_the_observed_mean_never_exceeds_max_tokens(local_provider):
    for _ in range(5):
        nbllm.ask("please answer with several words", max_tokens=50)
    assert estimate(["x"], "{value}", max_tokens=2).output_tokens_expected <= 2


# ---- prices ----------------------------------------------------------------------------------------


def test_an_unknown_price_is_none_not_zero(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-estimate-000000000000")
    reset_nbllm()
    result = estimate(["hello"], "{value}", provider="openai", model="a-model-nobody-prices")
    assert (result.usd_low, result.usd_high, result.price_source) == (None, None, "unknown")
    assert "cost unknown" in str(result) and "$0" not in str(result)
    assert "sk-test" not in repr(result) + result._repr_markdown_()


def test_a_known_cloud_price_gives_a_range(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-estimate-000000000000")
    reset_nbllm()
    result = estimate(["hello there", "and again"], "{value}", provider="openai", model="gpt-4o-mini",
                      max_tokens=100)
    from nbllm.prices import price_for
    from nbllm.registry import get_registry

    spec, settings = get_registry().require("openai")
    price = price_for(spec, settings, "gpt-4o-mini")
    assert price is not None and result.price_source == price.source == "genai-prices"
    assert result.usd_high == pytest.approx(price.cost(result.input_tokens, 200))
    assert result.input_method == "tokenizer estimate, conservative"  # OpenAI's chat model cannot count


def test_declared_prices_and_the_range_from_observed_answers(local_provider, monkeypatch):
    monkeypatch.setenv("LMSTUDIO_PRICE_INPUT", "2.0")
    monkeypatch.setenv("LMSTUDIO_PRICE_OUTPUT", "8.0")
    reset_nbllm()
    for _ in range(5):
        nbllm.ask("answer briefly", max_tokens=40)
    result = estimate(["a", "b", "c"], "{value}", max_tokens=40)
    assert result.price_source == "declared"
    expected = result.output_tokens_expected
    assert expected < 40
    assert result.usd_low == pytest.approx((result.input_tokens * 2.0 + 3 * expected * 8.0) / 1e6)
    assert result.usd_high == pytest.approx((result.input_tokens * 2.0 + 3 * 40 * 8.0) / 1e6)
    assert result.usd_low < result.usd_high and "–" in str(result)


# ---- the servers' own tokenizers ------------------------------------------------------------------


def test_llama_cpp_counts_with_its_tokenizer_and_template(monkeypatch):
    with TokenizerServer("llama.cpp") as server:
        monkeypatch.setenv("LLAMACPP_BASE_URL", server.url)
        reset_nbllm()
        prompts = ["one two three", "a longer prompt of seven words here", "x"]
        result = estimate(prompts, "{value}", provider="llamacpp", system="be brief")
        # template "<|syst|> be brief <|user|> Hello <|assistant|>" + BOS = 7 tokens, minus "Hello": 6 per request
        overhead = words(TokenizerServer.template([{"role": "system", "content": "be brief"},
                                                   {"role": "user", "content": "Hello"}])) + 1 - 1
        assert list(result.counts) == [words(p) + overhead for p in prompts]
        assert result.input_method == "llama.cpp tokenizer"
        assert all("content" in body for body in server.posts("/tokenize"))
        assert server.posts("/apply-template")[0]["messages"][0] == {"role": "system", "content": "be brief"}
        assert server.posts("/v1/chat/completions") == []


def test_vllm_counts_with_its_tokenizer_and_template(monkeypatch):
    with TokenizerServer("vLLM") as server:
        monkeypatch.setenv("VLLM_BASE_URL", server.url + "/v1")
        monkeypatch.setenv("VLLM_MODEL", "tiny")
        reset_nbllm()
        prompts = ["one two three", "four five"]
        result = estimate(prompts, "{value}", provider="vllm")
        overhead = words(TokenizerServer.template([{"role": "user", "content": "Hello"}])) - 1
        assert list(result.counts) == [words(p) + overhead for p in prompts]
        assert result.input_method == "vLLM tokenizer"
        bodies = server.posts("/tokenize")
        assert all(body["model"] == "tiny" for body in bodies)
        assert any(body.get("add_generation_prompt") for body in bodies if "messages" in body)
        assert server.posts("/v1/chat/completions") == []


def test_many_prompts_are_sampled_and_scaled(monkeypatch):
    monkeypatch.setitem(estimates.EXACT_LIMIT, "local", 5)
    with TokenizerServer("llama.cpp") as server:
        monkeypatch.setenv("LLAMACPP_BASE_URL", server.url)
        reset_nbllm()
        prompts = [" ".join(["word"] * (i % 7 + 1)) for i in range(40)]
        result = estimate(prompts, "{value}", provider="llamacpp")
        user_counts = [b for b in server.posts("/tokenize") if not b.get("add_special")]
        assert len(user_counts) == 5 + 1  # the sample, and the template's bare user text
        assert "5 of 40 counted, the rest scaled" in result.input_method
        exact = sum(words(p) + 3 for p in prompts)  # 3: "<|user|> … <|assistant|>" + BOS − "Hello"
        assert abs(result.input_tokens - exact) / exact < 0.25


def test_a_server_without_a_tokenizer_falls_back_to_the_estimate(local_provider):
    result = estimate(["hello"], "{value}")
    assert result.input_method == "tokenizer estimate, conservative"
    tried = [r["path"] for r in local_provider.requests if r["method"] == "POST"]
    assert "/tokenize" in tried and "/extras/tokenize/count" in tried  # asked, found nothing
    assert local_provider.chat_requests() == []


# ---- a cloud vendor's count endpoint (Anthropic, through pydantic-ai) --------------------------------


def test_anthropic_counts_with_its_count_endpoint(httpx2_mock, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-0000000000000000")
    reset_nbllm()
    route = httpx2_mock.post("https://api.anthropic.com/v1/messages/count_tokens").respond(
        200, json={"input_tokens": 42})
    result = estimate_prompt("How many tokens is this?", provider="anthropic", system="Be brief.", max_tokens=100)
    assert (result.input_tokens, result.input_method) == (42, "anthropic count_tokens")
    sent = json.loads(route.calls[0].request.content)
    assert sent["messages"][0]["content"][0]["text"] == "How many tokens is this?"
    assert "Be brief." in json.dumps(sent["system"])
    assert route.call_count == 1
    assert not [c for c in httpx2_mock.calls if c.request.url.path == "/v1/messages"]  # nothing sent to the model
    assert result.price_source == "genai-prices"
    assert result.usd_low == result.usd_high > 0  # no answers observed yet: expected = max_tokens


def test_a_failed_vendor_count_falls_back_and_says_why(httpx2_mock, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-0000000000000000")
    reset_nbllm()
    httpx2_mock.post("https://api.anthropic.com/v1/messages/count_tokens").respond(
        401, json={"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}})
    result = estimate_prompt("hello", provider="anthropic")
    assert result.input_method == "tokenizer estimate, conservative"
    assert any("anthropic count_tokens failed" in note for note in result.notes)
    assert "sk-ant-test" not in repr(result)


# ---- many prompts -------------------------------------------------------------------------------------------


def test_ten_thousand_prompts_with_the_tokenizer_estimate(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-estimate-000000000000")
    reset_nbllm()
    values = [f"Review {i}: the product arrived on day {i % 31} and worked as described." for i in range(10_000)]
    result = estimate(values, "Summarise: {value}", provider="openai")
    assert result.prompts == 10_000 and result.input_method == "tokenizer estimate, conservative"
    assert result.input_tokens == sum(result.counts) and len(result.counts) == 10_000


# ---- %%llm --estimate -------------------------------------------------------------------------------


def test_llm_magic_estimate_shows_it_and_sends_nothing(local_provider):
    with nbllm_shell() as shell:
        shell.user_ns["topic"] = "the history of the printing press " * 20
        result, outputs, printed = run_cell(shell, "%%llm --estimate --max-tokens 77\nWrite about {topic}")
        assert result.success, printed
        shown = [o["data"] for o in outputs if "text/markdown" in o.get("data", {})]
        assert shown and "estimate (nothing sent)" in shown[-1]["text/markdown"]
        assert "| output tokens | 77 each (max_tokens) |" in shown[-1]["text/markdown"]
        raw = estimate_prompt("Write about {topic}", raw=True)
        line = shell.run_line_magic("llm", "--estimate -o est Write about {topic}")
        assert isinstance(line, Estimate) and shell.user_ns["est"] is line
        assert line.input_tokens > raw.input_tokens + 60  # {topic} was filled before estimating
        assert local_provider.chat_requests() == []


def test_llm_magic_estimate_refuses_compare(local_provider):
    with nbllm_shell() as shell:
        result, _, printed = run_cell(shell, "%%llm --estimate --compare a,b\nhello")
        assert not result.success and "--estimate is for one provider" in printed
        assert local_provider.chat_requests() == []


# ---- the embedded model: within ±10% of what it reports ------------------------------------------------

VARIED = [
    "Hello!", "What is the capital of France?", "Write a haiku about the sea.", "2+2=?",
    "Résumé: café, naïve — ünïcode ✓ and emoji 🎉", "def f(x):\n    return {x: x**2}\n",
    "| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |", "Explain quantum computing in one precise sentence.",
    "List three colours.", "Translate 'good morning' into German, Spanish and Italian.",
    "SELECT name, COUNT(*) FROM orders GROUP BY name HAVING COUNT(*) > 10;",
    "The quick brown fox jumps over the lazy dog. " * 6, "12345 67890 3.14159 2.71828 1e-9",
    "{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}", "Why is the sky blue?",
    "Summarise: Revenue grew 12% year over year while costs fell 3%, driven by lower shipping prices.",
    "  indented\n\ttabbed\n\n\nblank lines  ", "A", "Name a prime number larger than 100.",
    "Compose a short limerick about a data scientist who forgot to save her notebook before a kernel crash.",
]


@pytest.mark.embedded
@pytest.mark.parametrize("system", [None, "You answer in one short sentence."])
def test_embedded_estimate_is_within_ten_percent_of_reported_usage(monkeypatch, system):
    monkeypatch.delenv("EMBEDDED_BASE_URL", raising=False)
    reset_nbllm()
    options = {"system": system} if system else {}
    result = estimate(VARIED, "{value}", provider="embedded", max_tokens=1, **options)
    assert result.input_method == "embedded tokenizer"
    reported = [nbllm.ask(p, provider="embedded", max_tokens=1, temperature=0, raw=True, **options).input_tokens
                for p in VARIED]
    ratios = [c / r for c, r in zip(result.counts, reported)]
    print(f"system={system!r}: sum {result.input_tokens} / {sum(reported)} = {result.input_tokens / sum(reported):.3f};"
          f" each {min(ratios):.3f}..{max(ratios):.3f}")
    assert 0.9 <= result.input_tokens / sum(reported) <= 1.1
    assert all(0.9 <= ratio <= 1.1 for ratio in ratios), list(zip(VARIED, result.counts, reported))


@pytest.mark.embedded
def test_embedded_estimate_sends_no_chat_request(monkeypatch):
    """The estimate itself never generates: the embedded server logs nothing into the call log."""
    monkeypatch.delenv("EMBEDDED_BASE_URL", raising=False)
    reset_nbllm()
    estimate(VARIED[:5], "{value}", provider="embedded")
    assert len(nbllm.history(limit=None)) == 0


# ---- one rule for a request's tokens: tokens.request_tokens / schema_tokens -----------------------------


def test_request_tokens_adds_each_part_and_its_framing():
    base = tokens.request_tokens("hello there")
    assert base == tokens.estimate("hello there") + tokens.CHAT_FRAMING
    system = "You are terse."
    assert tokens.request_tokens("hello there", system) == base + tokens.estimate(system) + tokens.SYSTEM_FRAMING
    turns = ["an earlier question", "its answer, 42"]
    assert tokens.request_tokens("hello there", history_texts=turns) == base + sum(map(tokens.estimate, turns))
    assert tokens.request_tokens("hello there", images=2) == base + 2 * tokens.IMAGE_TOKENS == base + 3_200


def test_the_fallback_estimate_is_request_tokens(local_provider):
    prompts = ["hello", "a somewhat longer prompt with 12 digits 123456789012"]
    system = "You are a careful reviewer."
    result = estimate(prompts, "{value}", system=system)
    assert result.input_method == "tokenizer estimate, conservative"
    assert list(result.counts) == [tokens.request_tokens(p, system) for p in prompts]


class _Review:  # built lazily: pydantic is imported by the tests that use it
    @staticmethod
    def model() -> Any:
        from pydantic import BaseModel

        class Review(BaseModel):
            sentiment: str
            stars: int
            summary: str

        return Review


@pytest.mark.parametrize("system", [None, "Be brief."])
def test_schema_tokens_covers_what_an_estimate_adds_for_the_schema(local_provider, system):
    review = _Review.model()
    options = {"system": system} if system else {}
    plain = estimate(["great"], "{value}", **options)
    typed = estimate(["great"], "{value}", output_type=review, **options)
    added = typed.input_tokens - plain.input_tokens
    assert added > 10
    assert added <= counting.schema_tokens(review) <= added * 2  # a bound for any target, and not a wild one
    assert counting.schema_tokens(None) == 0


# ---- local servers: one HTTP helper, one set of error words; the embedded model's template ---------------


class FailingTokenizer(TokenizerServer):
    """llama.cpp whose tokenizer measures the template, then answers HTTP 500 to every prompt."""

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        if path == "/tokenize" and len(self.posts("/tokenize")) > 2:
            return 500, {"error": "tokenizer broke"}
        return super().answer(path, body)


def test_a_tokenizer_failing_midway_falls_back_in_the_probes_words(monkeypatch):
    with FailingTokenizer("llama.cpp") as server:
        monkeypatch.setenv("LLAMACPP_BASE_URL", server.url)
        reset_nbllm()
        result = estimate(["one two three"], "{value}", provider="llamacpp")  # one: no request left to cancel
        assert result.input_method == "tokenizer estimate, conservative"
        assert list(result.counts) == [tokens.request_tokens("one two three")]
        assert f"HTTP 500: server error at {server.url}/tokenize" in result.notes


def test_an_unreadable_call_log_means_no_observations(local_provider):
    from nbllm.calllog import history_path

    path = history_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not a sqlite database at all " * 40)
    result = estimate(["hello"], "{value}", max_tokens=50)
    assert (result.output_tokens_expected, result.output_basis) == (50, "max_tokens")


def _gguf(path: Any, entries: list[tuple[str, int, bytes]]) -> None:
    """A GGUF header: magic, version 3, no tensors, then (key, value type, packed value) entries."""
    import struct

    data = b"GGUF" + struct.pack("<IQQ", 3, 0, len(entries))
    for key, kind, value in entries:
        data += struct.pack("<Q", len(key)) + key.encode() + struct.pack("<I", kind) + value
    path.write_bytes(data)


def test_the_chat_template_is_read_from_a_gguf_header(tmp_path):
    import struct

    from nbllm.embedded import gguf_chat_template, served_chat_template

    def text(s: str) -> bytes:
        return struct.pack("<Q", len(s.encode())) + s.encode()

    strings = struct.pack("<IQ", 8, 2) + text("<s>") + text("</s>")  # an array of strings, skipped item by item
    template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"
    good = tmp_path / "model.gguf"
    _gguf(good, [("general.alignment", 4, struct.pack("<I", 32)), ("tokenizer.ggml.tokens", 9, strings),
                 ("general.name", 8, text("tiny")), ("tokenizer.chat_template", 8, text(template))])
    assert gguf_chat_template(str(good)) == template
    none = tmp_path / "none.gguf"
    _gguf(none, [("general.name", 8, text("tiny"))])
    assert gguf_chat_template(str(none)) is None
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(good.read_bytes()[:40])
    assert gguf_chat_template(str(truncated)) is None
    (tmp_path / "not.gguf").write_bytes(b"PK\x03\x04 a zip")
    assert gguf_chat_template(str(tmp_path / "not.gguf")) is None
    assert gguf_chat_template(str(tmp_path / "missing.gguf")) is None
    assert served_chat_template("http://127.0.0.1:9/v1") is None  # not the server nbllm runs
