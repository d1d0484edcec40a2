"""`import nbllm` stays cheap, and no exported name is shadowed by a module of the same name."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import nbllm

HEAVY = ("pydantic_ai", "pandas", "ipywidgets", "openai", "anthropic", "google.genai")


def loaded_after(code: str) -> list[str]:
    """Which heavy modules a fresh interpreter has loaded after running `code`."""
    probe = f"import sys, json\n{code}\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_nbllm_loads_nothing_heavy():
    assert loaded_after("import nbllm") == []


def test_light_public_names_load_nothing_heavy():
    code = "import nbllm\nnbllm.current(); nbllm.providers(); nbllm.get_registry(); nbllm.ProviderHealth; nbllm.cli"
    assert loaded_after("import nbllm.cli\n" + code) == []


def test_the_probe_really_sees_heavy_imports():
    """The check above can fail: building a model does load pydantic-ai and the OpenAI SDK."""
    assert {"pydantic_ai", "openai"} <= set(loaded_after("import nbllm\nnbllm.get_model('lmstudio')"))


SHELL = ("from IPython.core.interactiveshell import InteractiveShell\n"
         "from IPython.utils.capture import capture_output\n"
         "ip = InteractiveShell.instance()\nip.run_line_magic('load_ext', 'nbllm')\n"
         "with capture_output() as shown:\n    {action}\n"
         "seen = shown.stdout + ''.join(str(o.data) for o in shown.outputs)\n"
         "assert {expect!r} in seen, (seen, shown.stderr)\n")


def test_first_status_draws_its_tables_without_pandas():
    """`%llm_providers --status` in a fresh process: probes, HTML and text tables, no pandas."""
    code = SHELL.format(action="ip.run_line_magic('llm_providers', '--status')", expect="not configured")
    loaded = loaded_after(code + "assert '<table' in str(shown.outputs[0].data['text/html'])")
    assert "pandas" not in loaded and "ipywidgets" not in loaded, loaded


def test_first_llm_cell_loads_no_pandas(fake_server, monkeypatch):
    """`%load_ext nbllm` and the first `%%llm` (a local server): the answer arrives, pandas is never imported."""
    monkeypatch.setenv("LMSTUDIO_BASE_URL", fake_server.url + "/v1")
    code = SHELL.format(action="ip.run_cell_magic('llm', '-p lmstudio', 'Say hi')", expect="Echo: Say hi")
    loaded = loaded_after(code)
    assert "pandas" not in loaded and "ipywidgets" not in loaded, loaded


def test_the_api_table_still_is_a_dataframe():
    """The check above can fail: `nbllm.health_table()` (the API) returns a DataFrame, so it loads pandas."""
    assert "pandas" in loaded_after("import nbllm\nassert type(nbllm.health_table()).__name__ == 'DataFrame'")


def test_no_exported_name_equals_a_module_name():
    package = Path(nbllm.__file__).parent
    modules = {info.name for info in pkgutil.iter_modules([str(package)])}
    assert {"api", "config", "registry", "cli", "magics"} <= modules  # the listing works
    clashes = sorted(set(nbllm._EXPORTS) & modules)
    assert clashes == [], f"exported names shadowed by modules: {clashes}"


def test_every_export_names_a_module_in_the_package():
    package = Path(nbllm.__file__).parent
    modules = {info.name for info in pkgutil.iter_modules([str(package)])}
    core = {"errors", "catalog", "config", "health", "registry", "api", "session", "calls", "tables"}
    for name, module in nbllm._EXPORTS.items():
        if module in core:
            assert module in modules and hasattr(nbllm, name), name
