"""nbllm's exceptions: one hierarchy, each error says what to do next.

Messages never contain API keys: errors are built from provider names and URLs,
and `redact` scrubs any secret that a lower layer might have echoed back.
"""

from __future__ import annotations

import re

__all__ = ["NbllmError", "ConfigurationError", "ModelError", "redact"]

# Shapes of well-known keys (sk-..., sk-ant-..., xai-..., AIza...), plus any
# `Bearer <token>` header value, in case an SDK message echoes one.
_KEY_PATTERNS = re.compile(
    r"(sk-[A-Za-z0-9_\-]{8,}|xai-[A-Za-z0-9_\-]{8,}|AIza[A-Za-z0-9_\-]{20,}|(?<=Bearer )[A-Za-z0-9._\-]{8,})"
)


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Replace known secret values and key-shaped tokens with a mask."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return _KEY_PATTERNS.sub("***", text)


class NbllmError(Exception):
    """Base class of every error nbllm raises on purpose."""


class ConfigurationError(NbllmError, ValueError):
    """Bad configuration or an unknown/disabled provider; the message names valid choices."""


class ModelError(NbllmError, RuntimeError):
    """A provider failed: says which provider, which URL and what happened."""

    def __init__(self, provider: str, message: str, url: str | None = None, hint: str | None = None):
        self.provider = provider
        self.url = url
        self.reason = redact(message)
        self.hint = hint
        where = f" at {url}" if url else ""
        text = f"{provider}{where}: {self.reason}"
        if hint:
            text += f" — {hint}"
        super().__init__(text)
