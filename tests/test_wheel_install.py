"""An installed wheel works outside the repository: models and samples come with it, nothing is read from or
written into the source tree or the installed package (paths come from the environment / XDG defaults)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv outside the repo with the strokescan wheel installed (its dependencies are taken from the
    test environment's site-packages through a .pth file, so nothing is downloaded)."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"  # a clean copy: a build/ folder in the checkout could carry stale modules
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(base / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    if build.returncode != 0:
        pytest.fail(f"wheel build failed: {build.stderr[-2000:]}")
    wheel = next((base / "dist").glob("strokescan-*.whl"))
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    site = next(env_dir.glob("lib/python3.*/site-packages"))
    deps = Path(sysconfig.get_paths()["purelib"])
    (site / "test-deps.pth").write_text(f"{deps}\n")
    py = env_dir / "bin" / "python"
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q",
                              str(wheel)], capture_output=True, text=True, timeout=300)
    if "no such option: --python" in install.stderr:  # older pip: install into the target directly
        install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                                  str(wheel)], capture_output=True, text=True, timeout=300)
    if install.returncode != 0:
        pytest.fail(f"wheel install failed: {install.stderr[-2000:]}")
    return env_dir


def test_installed_wheel_predicts_a_sample_from_anywhere(installed: Path, tmp_path: Path) -> None:
    py = installed / "bin" / "python"
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "STROKESCAN_TORCH_THREADS": "1"}
    code = ("import strokescan, sys; from strokescan.config import SAMPLES_DIR, cache_root; "
            "print(strokescan.__file__); print(SAMPLES_DIR / 'phe-sich_0011_18.png'); print(cache_root())")
    where = subprocess.run([str(py), "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert where.returncode == 0, where.stderr
    package_file, sample, cache = where.stdout.split()
    assert str(installed) in package_file and str(ROOT) not in package_file  # the wheel, not the checkout
    assert cache == str(home / ".cache" / "strokescan")
    before = sorted(p for p in Path(package_file).parent.rglob("*") if "__pycache__" not in p.parts)
    run = subprocess.run([str(py), "-m", "strokescan.app.cli", "predict", sample, "--json", "--masks-dir", "m"],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    line = json.loads(run.stdout.splitlines()[0])
    assert 0.0 <= line["probability"] <= 1.0 and (tmp_path / "m" / "phe-sich_0011_18.png").is_file()
    after = sorted(p for p in Path(package_file).parent.rglob("*") if "__pycache__" not in p.parts)
    assert after == before  # nothing written into the installed package
