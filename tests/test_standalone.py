"""The project stands alone: a clone with nothing beside it has everything its code, tests, configs,
bench scripts and README name (issue: `make test` failed in every clone without a `shared` folder
above it)."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE = ".." + "/shared"  # spelled in two parts so this file does not find itself


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], check=True, capture_output=True).stdout
    return [ROOT / name for name in out.decode().split("\0") if name]


def test_no_tracked_file_names_a_path_beside_the_checkout():
    files = [f for f in tracked_files() if f.is_file() and not f.is_symlink()]
    assert any(f.name == "README.md" for f in files)  # the listing found the project
    hits = [f.relative_to(ROOT).as_posix() for f in files
            if OUTSIDE in f.read_bytes().decode("utf-8", "replace")]
    assert hits == []


def test_package_links_stay_inside_the_repository():
    links = [f for f in tracked_files() if f.is_symlink()]
    assert {f.relative_to(ROOT).as_posix() for f in links} >= {"codelora/configs", "codelora/benchmarks"}
    for link in links:
        assert link.resolve().is_relative_to(ROOT), link
        assert link.resolve().exists(), link


def test_the_readme_map_names_every_module():
    """README "How the code is laid out" is what a newcomer reads first: it names every module of the
    package (a module added or moved without the map fails here)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("## How the code is laid out")
    section = readme[start:readme.index("\n## ", start + 1)]
    package = ROOT / "codelora"
    modules = [p for p in sorted(package.rglob("*.py")) if p.name != "__init__.py"]
    assert len(modules) > 40
    missing = [str(p.relative_to(package)) for p in modules
               if f"`{p.name}`" not in section and f"`{p.stem}`" not in section]
    assert not missing, f"modules the README's map does not name: {missing}"
