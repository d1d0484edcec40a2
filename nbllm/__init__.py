"""nbllm: every LLM a notebook can reach, one magic away.

`import nbllm` is cheap: public names are resolved on first attribute access,
so pydantic-ai, pandas and ipywidgets load only when something needs them.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # errors
    "NbllmError": "errors", "ConfigurationError": "errors", "ModelError": "errors",
    # catalog / config
    "ProviderSpec": "catalog", "register_provider": "catalog",
    "ProviderSettings": "config", "Secret": "config", "NbllmConfigWarning": "config",
    # health / registry
    "ProviderHealth": "health", "get_registry": "registry",
    # provider-level API
    "get_model": "api", "get_model_async": "api", "resolve": "api", "check_all_providers": "api",
    "check_provider": "api", "health_check": "api", "enable": "api", "disable": "api", "reinit": "api",
    "status": "api", "providers": "api", "models": "api", "models_async": "api",
    # your own endpoints and aliases (nbllm.toml)
    "add_provider": "api", "remove_provider": "api", "alias": "api", "unalias": "api", "aliases": "api",
    # the kernel-wide default
    "use": "session", "current": "session", "observe": "session", "conversation": "session",
    # asking
    "ask": "calls", "ask_async": "calls", "stream": "calls", "astream": "calls", "Answer": "calls",
    # tables and widgets
    "health_table": "api", "panel": "widgets",
    # many providers at once, the call log and the replay cache
    "compare": "multi", "consensus": "multi", "map": "batch", "history": "calllog", "cache": "replay",
    "compare_async": "multi", "consensus_async": "multi", "map_async": "batch", "Failed": "batch",
    # typed answers over DataFrames
    "classify": "batch", "extract": "batch", "classify_async": "batch", "extract_async": "batch",
    # the notebook's failed cells
    "fix": "fixes", "Fix": "fixes",
    # durable map jobs
    "jobs": "jobstore",
    # cost before you spend it
    "budget": "budgets", "spend": "spending", "BudgetExhausted": "errors",
    "estimate": "estimates", "estimate_prompt": "estimates", "estimate_async": "estimates", "Estimate": "estimates",
}
# Module names never equal an exported name: importing a submodule sets an attribute
# of the same name on the package, which would shadow the function.

__all__ = sorted([*_EXPORTS, "load_ipython_extension", "unload_ipython_extension", "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nbllm' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext nbllm`: register the magics (nothing heavy is imported)."""
    from .magics import load_ipython_extension as _load

    _load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from .magics import unload_ipython_extension as _unload

    _unload(ipython)
