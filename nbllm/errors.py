"""nbllm's exceptions: one hierarchy, each error says what to do next.

Messages never contain API keys or URL passwords: errors are built from provider
names and URLs, and `redact` scrubs any secret (and any `user:password@` in a URL)
that a lower layer might have echoed back.
"""

from __future__ import annotations

import re

__all__ = ["NbllmError", "ConfigurationError", "ModelError", "redact", "display_url"]

# Shapes of well-known keys (sk-..., sk-ant-..., xai-..., AIza...), plus any
# `Bearer <token>` header value, in case an SDK message echoes one.
_KEY_PATTERNS = re.compile(
    r"(sk-[A-Za-z0-9_\-]{8,}|xai-[A-Za-z0-9_\-]{8,}|AIza[A-Za-z0-9_\-]{20,}|(?<=Bearer )[A-Za-z0-9._\-]{8,})"
)


# The `user:password@` part of any URL in a text (up to the last `@` before the path,
# since a password may itself contain an unescaped `@`).
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/?#]*@")


def display_url(url: str) -> str:
    """`url` without `user:password@`: what messages and tables show (requests keep the real URL)."""
    return _URL_CREDENTIALS.sub(r"\1", url)


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Replace known secret values, key-shaped tokens and URL credentials with a mask."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return _KEY_PATTERNS.sub("***", display_url(text))


class NbllmError(Exception):
    """Base class of every error nbllm raises on purpose."""


class ConfigurationError(NbllmError, ValueError):
    """Bad configuration or an unknown/disabled provider; the message names valid choices."""


class ModelError(NbllmError, RuntimeError):
    """A provider failed: says which provider, which URL and what happened."""

    def __init__(self, provider: str, message: str, url: str | None = None, hint: str | None = None):
        self.provider = provider
        self.url = display_url(url) if url else url
        self.reason = redact(message)
        self.hint = hint
        where = f" at {self.url}" if url else ""
        text = f"{provider}{where}: {self.reason}"
        if hint:
            text += f" — {hint}"
        super().__init__(text)
