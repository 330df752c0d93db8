"""What the package installs: masktopo only at the top level (the repository's cli/ and configs/
folders install as masktopo.cli and masktopo.configs), the shipped configs, py.typed, LICENSE."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from masktopo.options import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _declared() -> tuple[list[str], dict[str, str]]:
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return tool["packages"], tool["package-dir"]


def test_the_package_list_names_every_package_of_the_tree():
    packages, package_dir = _declared()
    found = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "masktopo").rglob("__init__.py")
    }
    found |= set(package_dir)  # masktopo.cli -> cli/, masktopo.configs -> configs/
    assert sorted(found) == sorted(packages)
    for name, folder in package_dir.items():
        assert (ROOT / folder / "__init__.py").is_file(), name


def _source_copy(dst: Path) -> Path:
    """The checkout's files as a fresh clone has them (tracked, and untracked but not ignored),
    copied to ``dst``: an in-tree build reuses ``build/``, where modules deleted or moved since
    an earlier build linger and would land in the wheel."""
    import shutil

    git = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, timeout=60)  # fmt: skip
    if git.returncode != 0:  # not a git checkout: everything but build outputs
        ignore = shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".git")
        shutil.copytree(ROOT, dst, ignore=ignore)
        return dst
    for rel in filter(None, git.stdout.decode().split("\0")):
        if (ROOT / rel).is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dst / rel)
    return dst


@pytest.mark.slow
def test_the_wheel_holds_masktopo_only_with_configs_py_typed_and_license(tmp_path):
    src = _source_copy(tmp_path / "src")
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                        str(tmp_path), str(src)], capture_output=True, text=True, timeout=600)  # fmt: skip
    if p.returncode != 0 and "Could not find a version that satisfies" in p.stderr:
        pytest.skip("no index to fetch the build backend (setuptools) from")
    assert p.returncode == 0, p.stderr[-3000:]
    (wheel,) = tmp_path.glob("masktopo-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"masktopo", next(t for t in tops if t.endswith(".dist-info"))}
    for needed in ("masktopo/cli/main.py", "masktopo/configs/gap_fmnist_lenet300.toml",
                   "masktopo/configs/repro/e3_rigl_lenet300.toml", "masktopo/py.typed"):  # fmt: skip
        assert needed in names, needed
    assert any(n.endswith("LICENSE") for n in names)
    # every module of the tree, and no other (cli/ and configs/ install under masktopo/)
    _, package_dir = _declared()
    where = {"masktopo": src / "masktopo"} | {k: src / v for k, v in package_dir.items()}
    tree = {
        "/".join([*name.split("."), *f.relative_to(folder).parts])
        for name, folder in where.items()
        for f in folder.rglob("*.py")
    }
    assert {n for n in names if n.endswith(".py")} == tree
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "masktopo = masktopo.cli.main:main" in zipfile.ZipFile(wheel).read(entry).decode()
