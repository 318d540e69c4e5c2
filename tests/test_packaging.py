"""An installed copy holds every package of selftrain, not only those someone remembered to list.

Builds a wheel of a copy of the sources (so the repository gets no build/ or
egg-info) without build isolation: setuptools comes from the venv, no network.
"""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_contains_every_package(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "selftrain", source / "selftrain", ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", "-w", str(tmp_path / "dist"), str(source)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = (tmp_path / "dist").glob("selftrain-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in ("selftrain/experiments/expert_iteration.py", "selftrain/generation/__init__.py",
                 "selftrain/stages/__init__.py", "selftrain/stages/judge.py", "selftrain/rewards/math.py"):
        assert path in names, path
    packages = {str(p.parent.relative_to(REPO)) for p in (REPO / "selftrain").rglob("*.py")}
    missing = sorted(p for p in packages if not any(n.startswith(p + "/") for n in names))
    assert not missing, f"packages left out of the wheel: {missing}"
    without_init = sorted(p for p in packages if not (REPO / p / "__init__.py").is_file())
    assert not without_init, f"directories of modules without __init__.py (setuptools skips them): {without_init}"
