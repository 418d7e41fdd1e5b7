"""Loading a Lambda's `functions/<name>/app.py` in a test, as the runtime does: by file, not by package
(every function's module is called `app`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_app(function: str, module_name: str) -> ModuleType:
    """A fresh copy of `functions/<function>/app.py` under `module_name` (unique per test module)."""
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "functions" / function / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
