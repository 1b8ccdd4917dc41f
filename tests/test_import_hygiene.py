"""Importing any engine module, in a fresh process, loads no textual and no Google client, and reads no settings."""

import json
import subprocess
import sys

PROBE = r"""
import importlib, json, pkgutil, sys
import mdth_engine.core.settings as settings_mod
calls = []
original = settings_mod.Settings.__init__
def spy(self, *a, **k):
    calls.append(1)
    original(self, *a, **k)
settings_mod.Settings.__init__ = spy
import mdth_engine
names = []
for info in pkgutil.walk_packages(mdth_engine.__path__, "mdth_engine."):
    if info.name == "mdth_engine.demo" or info.name.endswith("__main__"):
        continue
    importlib.import_module(info.name)
    names.append(info.name)
loaded = sorted(m for m in sys.modules if m == "textual" or m.startswith(("textual.", "google.cloud", "mdth_console")))
print(json.dumps({"modules": names, "loaded": loaded, "settings_calls": len(calls)}))
"""


def test_engine_imports_are_headless_and_lazy():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert "mdth_engine.cli" in result["modules"] and "mdth_engine.core.keys" in result["modules"]
    assert result["loaded"] == [], f"engine imports pulled in: {result['loaded']}"
    assert result["settings_calls"] == 0


def test_engine_source_never_imports_textual():
    import pathlib

    import mdth_engine

    root = pathlib.Path(mdth_engine.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith(("import textual", "from textual")):
                offenders.append(f"{path}: {stripped}")
            # Only `mdth console` may load the console, lazily inside the command, never at module level.
            if line.startswith(("import mdth_console", "from mdth_console")):
                offenders.append(f"{path}: {stripped}")
    assert offenders == [], offenders
