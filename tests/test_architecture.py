"""The layers of docs/architecture.md hold: import-linter's contracts (pyproject.toml) pass, and a violation
would be caught."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter")
from importlinter import cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert cli.lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == cli.EXIT_STATUS_SUCCESS


def test_an_upward_import_breaks_the_contract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture) -> None:
    """The same contracts on a copy of the package where the core imports the app layer must fail."""
    pkg = tmp_path / "strokescan"
    shutil.copytree(ROOT / "src" / "strokescan", pkg, ignore=shutil.ignore_patterns("resources", "samples", "__pycache__"))
    (pkg / "core" / "labels.py").write_text((pkg / "core" / "labels.py").read_text() + "\nimport strokescan.app.cli\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in list(sys.modules) if m == "strokescan" or m.startswith("strokescan.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.chdir(tmp_path)
    assert cli.lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) != cli.EXIT_STATUS_SUCCESS
    out = capsys.readouterr().out
    assert "Layers import downwards only (docs/architecture.md) BROKEN" in out
    assert "strokescan.core.labels -> strokescan.app.cli" in out
