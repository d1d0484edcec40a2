"""IPython magics: `%llm_providers` (providers.py), `%%llm` / `%llm` (llm.py) and `%llm_fix` (fix.py).

`%load_ext nbllm` registers both families and imports nothing heavy; pydantic-ai,
pandas and ipywidgets load when a magic first needs them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_ipython_extension", "unload_ipython_extension"]

_MAGIC_CLASSES: list[Any] = []


def _classes() -> list[type]:
    from .fix import FixMagics
    from .llm import LLMMagics
    from .providers import ProviderMagics

    return [ProviderMagics, LLMMagics, FixMagics]


def load_ipython_extension(ipython: Any) -> None:
    _unregister(ipython)  # loading twice must not leave duplicates behind
    for cls in _classes():
        instance = cls(shell=ipython)
        ipython.register_magics(instance)
        _MAGIC_CLASSES.append(instance)
    from ..cells import register

    register(ipython)  # keep failed cells for {Err} and %llm_fix (post_run_cell, never set_custom_exc)


def unload_ipython_extension(ipython: Any) -> None:
    """Remove the magics and stop nbllm's loop thread (it restarts on next use)."""
    from .. import bridge, cells, clients, context

    _unregister(ipython)
    cells.unregister(ipython)
    context.configure()  # %config's limits leave with the magics
    bridge.shutdown()
    clients.clear()  # clients of the stopped loop must not be reused


def _unregister(ipython: Any) -> None:
    manager = ipython.magics_manager
    for instance in list(_MAGIC_CLASSES):
        for kind, names in instance.magics.items():
            for name in names:
                manager.magics[kind].pop(name, None)
        manager.registry.pop(type(instance).__name__, None)
        if instance in getattr(ipython, "configurables", ()):  # Magics.__init__ added it for %config
            ipython.configurables.remove(instance)
        _MAGIC_CLASSES.remove(instance)
