"""Whether a request fits where it goes, decided before anything is sent.

Images: a provider or model known to take none (the embedded model, text-only families such
as gpt-oss or DeepSeek's chat models, a pydantic-ai profile saying so) is refused in one line
that names a provider that would take them; an unknown local model is tried, and its refusal
is put in words (`explain`). A whole table (`{df!full}`) longer than the model's known context
is refused with the numbers. Both are `Unsuitable`: a fallback chain's next link may take them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .errors import ModelError, Unsuitable

if TYPE_CHECKING:
    from .catalog import ProviderSpec
    from .request import Request, Target

__all__ = ["check", "explain", "takes_images", "known_text_only"]

_TEXT_ONLY = re.compile(r"^(?!.*(vl|vision|ocr|omni|multimodal|llava))"
                        r".*(gpt-oss|deepseek-(chat|reasoner|flash|coder|r1|v3)|smollm|llama-?3\.[13]\b|mixtral|"
                        r"gpt-3\.5|\bo[13]-mini|qwen3(?![.\d])|codestral|phi-?[34])", re.IGNORECASE)
"""Model families known to take text only, whatever server runs them (a vision variant's name says so)."""
_VISION_CLOUD = ("openai", "anthropic", "gemini")
_REFUSED_IMAGE = re.compile(r"image|vision|multimodal|mmproj|modalit|image_url|content type", re.IGNORECASE)


def known_text_only(spec: "ProviderSpec", model: str | None) -> bool:
    """The provider, or the model's family, takes no images (decided from names: nothing is built or started)."""
    return spec.images is False or bool(_TEXT_ONLY.search(model or ""))


def takes_images(target: "Target", model: Any) -> bool | None:
    """False when the provider or model is known to take no images; True when its profile says it does
    and the family is not known text-only; None (try) for an unknown local model."""
    if known_text_only(target.spec, target.model):
        return False
    profile = getattr(model, "profile", None) or {}
    if isinstance(profile, dict) and profile.get("supports_image_input", True) is False:
        return False
    return True if target.spec.kind == "cloud" else None


def _instead(exclude: str) -> str:
    """A provider that would take images: one with a key first, else the usual vision choices."""
    from .registry import get_registry

    registry = get_registry()
    keyed = [name for name in _VISION_CLOUD if name != exclude and registry.settings(name).has_key
             and registry.settings(name).enabled]
    if keyed:
        return f"ask {keyed[0]} instead (-p {keyed[0]})"
    return "use openai, anthropic or gemini (with an API key) or a vision model on ollama or lmstudio " \
           "(e.g. qwen2.5vl, llava)"


def check(request: "Request", target: "Target", model: Any) -> None:
    """Raise `Unsuitable` when the request cannot go to `target` as it is; nothing has been sent."""
    count = len(request.images)
    if count:
        if takes_images(target, model) is False:
            raise Unsuitable(target.provider, f"{target.model} takes no images, and the prompt has "
                             f"{count} image{'s' if count > 1 else ''}", hint=_instead(target.provider))
    if request.whole_tokens is not None:
        from .tokens import context_window

        window = context_window(target.provider, target.model, target.settings)
        size = request.whole_tokens + (request.max_tokens or target.settings.max_tokens or 0)
        if window is not None and size > window:
            raise Unsuitable(target.provider, f"the prompt with a whole table ({{df!full}}) needs about {size:,} "
                             f"tokens with the answer, and {target.model}'s context holds {window:,}",
                             hint="send {df} (a capped summary) instead, or use a model with a longer context")


def explain(error: ModelError, said: str, request: "Request", target: "Target") -> ModelError:
    """A server's refusal of an image, put in words: the request had images and the reply (`said`: the
    message of its error body) names them. Not retried; a chain's next link may take it."""
    if not request.images or error.status not in (400, 415, 422, 500, 501) or not _REFUSED_IMAGE.search(said):
        return error
    return ModelError(target.provider, f"{target.model} did not take the image ({said})", url=error.url,
                      hint=f"this model takes text only: {_instead(target.provider)}", status=error.status)
