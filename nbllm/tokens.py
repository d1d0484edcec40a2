"""How many tokens a text takes, and how many a model can read — without a tokenizer.

`estimate` is deliberately conservative: a budget built on it must hold for the
tokenizers in common use, which differ most on digits (SentencePiece/Llama-style
split them one per token, GPT-style group up to three). So digits count one each,
runs of ASCII letters one per four letters, a newline and every other ASCII
character (punctuation, `|`) one each, and a non-ASCII character one per UTF-8 byte
(byte-level BPE falls back to bytes for rare characters: "é" is 2 tokens in SmolLM2).
A single space is free when the tokenizer glues it to the next letter or sign (" the",
" |"), but not before a digit (" 7" is two tokens in SmolLM2) — which is most of a
markdown table of numbers; longer runs of spaces (alignment, indentation) cost one
per four. Measured against SmolLM2's tokenizer (tests/test_summaries.py): tables of
numbers about 1.0×, code 1.2×, prose 1.4×.

`request_tokens` is one request's input by that estimate — prompt, system prompt, earlier turns,
images, and the chat template's framing (what an output type adds: `counting.schema_tokens`); estimates
(`nbllm.estimate`) and budgets both use them, so a budget reserves what an estimate's `usd_high` says.

`context_window` is the model's context length where nbllm can know it offline:
the embedded model's `--n_ctx`, a cloud model's entry in genai-prices' bundled data.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import ProviderSettings

__all__ = ["estimate", "request_tokens", "context_window", "CHAT_FRAMING", "SYSTEM_FRAMING",
           "IMAGE_TOKENS"]

CHAT_FRAMING = 7
"""Tokens a chat template adds around one user message (role markers, the assistant's cue)."""
SYSTEM_FRAMING = 4
"""Tokens it adds around a system prompt, when there is one."""
IMAGE_TOKENS = 1_600
"""What one image is counted as: about the most a 1568-px image costs at OpenAI or Anthropic."""

# One match per counted piece: a run of ASCII letters, a run of spaces/tabs, or one other character.
_PIECES = re.compile(r"[A-Za-z]+|[ \t]+|.", re.DOTALL)
_GLUE = re.compile(r"[A-Za-z!-/:-@\[-`{-~]")
"""What a preceding space joins into one token: ASCII letters and punctuation, not digits."""

def estimate(text: str) -> int:
    """A token count at least as large as common BPE tokenizers give (within about 2×)."""
    count = 0
    for match in _PIECES.finditer(text):
        piece = match.group()
        first = piece[0]
        if first in " \t":
            glued = 1 if _GLUE.match(text, match.end()) else 0
            count += (len(piece) - glued + 3) // 4
        elif first.isascii():
            count += (len(piece) + 3) // 4 if first.isalpha() else 1
        else:
            count += len(first.encode("utf-8", "surrogatepass"))
    return count


def request_tokens(prompt: str, system: str | None = None, history_texts: Iterable[str] = (),
                   images: int = 0) -> int:
    """One chat request's input tokens by `estimate`: the prompt, the system prompt, the texts of earlier
    turns and `IMAGE_TOKENS` per image, plus the chat template's framing."""
    total = estimate(prompt) + CHAT_FRAMING + sum(estimate(text) for text in history_texts)
    if system:
        total += estimate(system) + SYSTEM_FRAMING
    return total + IMAGE_TOKENS * images


def context_window(spec_name: str, model: str, settings: "ProviderSettings | None" = None) -> int | None:
    """The context length of `model` on provider `spec_name` in tokens, or None when unknown.

    The embedded model: the `--n_ctx` nbllm starts its server with (None for a server the
    user runs, `EMBEDDED_BASE_URL`). A cloud model: genai-prices' offline data, looked up by
    provider and, failing that, by the provider's base URL. Other local servers choose their
    own context length at load time: None.
    """
    from .catalog import get_spec

    try:
        spec = get_spec(spec_name)
    except Exception:  # an unknown name: nothing is known about it
        return None
    if spec.name == "embedded":
        if settings is not None and not settings.base_url_is_default:
            return None
        from .embedded import context_length

        return context_length()
    if spec.kind != "cloud" or not model:
        return None
    from .prices import model_info

    info = model_info(spec.name, model, settings.base_url if settings else None)
    return int(info.context_window) if info is not None and info.context_window else None


