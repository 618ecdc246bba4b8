"""The public surface users import: typed signatures, ``py.typed`` markers, and packages that
import without Ray."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("search", "trainables", "spaces", "analysis")
PUBLIC_MODULES = (
    *PACKAGES, "trainables.bank", "trainables.checkpoint", "trainables.data", "trainables.models",
    "trainables.loops", "trainables.curriculum", "trainables.distill", "analysis.tables",
)  # fmt: skip


def untyped(module_name: str) -> list[str]:
    """Public functions and methods of ``module_name`` (its ``__all__``, else what it defines
    without a leading ``_``) with a parameter or the return left unannotated."""
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None) or [
        name for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == module_name
    ]  # fmt: skip
    found = []
    for name in names:
        obj = getattr(module, name)
        if inspect.isfunction(obj):
            functions = [(name, obj)]
        elif inspect.isclass(obj) and obj.__module__.split(".")[0] in PACKAGES:
            functions = [
                (f"{name}.{attr}", value)
                for attr, value in vars(obj).items()
                if inspect.isfunction(value) and not attr.startswith("_")
            ]
        else:
            continue
        for qualified, function in functions:
            signature = inspect.signature(function)
            bare = [
                p for p, v in signature.parameters.items()
                if v.annotation is inspect.Parameter.empty and p not in ("self", "cls")
            ]  # fmt: skip
            if bare or signature.return_annotation is inspect.Signature.empty:
                found.append(f"{module_name}.{qualified}")
    return found


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_public_signatures_are_typed(module):
    assert untyped(module) == []


def test_an_untyped_function_is_found(tmp_path, monkeypatch):
    (tmp_path / "loose.py").write_text("__all__ = ['f']\ndef f(x):\n    return x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert untyped("loose") == ["loose.f"]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_ships_a_py_typed_marker(package):
    assert (ROOT / package / "py.typed").is_file()


def test_the_markers_are_package_data():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["*"]


def test_importing_the_packages_does_not_import_ray_or_torch():
    code = (
        "import sys, search, trainables, spaces, analysis; "
        "print(sorted(m for m in ('ray', 'torch') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
