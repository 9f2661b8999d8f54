"""The Docker image (read from the Dockerfile; no Docker daemon is needed): every command line
and every first-party module they import, at any depth and also inside functions, is copied;
so are the data files the library reads; it runs as a non-root user with one cache volume."""

import ast
import re
from pathlib import Path

from helpers import REPO

DOCKERFILE = REPO / "Dockerfile"
FIRST_PARTY = ("clipdet", "networks")


def instructions() -> list[tuple[str, str]]:
    """(instruction, arguments), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


def copied() -> list[str]:
    """Sources of every COPY (folders end with '/')."""
    sources = []
    for name, args in instructions():
        if name == "COPY":
            sources += [a for a in args.split()[:-1] if not a.startswith("--")]
    return sources


def is_copied(path: Path) -> bool:
    relative = path.relative_to(REPO).as_posix()
    return any(relative == s or (s.endswith("/") and relative.startswith(s)) for s in copied())


def module_file(module: str) -> Path | None:
    """The file of a first-party module (a package's __init__.py), None for others."""
    if module.split(".")[0] not in FIRST_PARTY:
        return None
    base = REPO.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Every module an import statement of ``path`` names, wherever the statement is, with
    the submodules of ``from package import name`` forms; relative imports resolved."""
    package = list(path.relative_to(REPO).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}
    return found


def command_lines() -> list[Path]:
    """The front ends: scripts at the top of the repository (and data/download.py)."""
    scripts = [p for p in REPO.glob("*.py") if '__name__ == "__main__"' in p.read_text()]
    return sorted(scripts) + [REPO / "data" / "download.py"]


def test_every_command_line_and_the_modules_they_import_are_in_the_image():
    assert {p.name for p in command_lines()} >= {"main.py", "train.py", "report.py"}
    todo, seen = list(command_lines()), set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        assert is_copied(path), f"{path.relative_to(REPO)} is not copied into the image"
        todo += [f for m in imported_modules(path) if (f := module_file(m)) is not None]
    assert REPO / "clipdet" / "pipeline" / "ray_engine.py" in seen  # imported inside a function
    assert REPO / "networks" / "resnet_nodown.py" in seen


def test_data_files_the_library_reads_are_in_the_image():
    assets = list((REPO / "configs").glob("*.yaml"))
    assets += [p for p in (REPO / "clipdet").rglob("*") if p.is_file() and p.suffix != ".pyc"]
    assets += [REPO / "data" / "commercial_tools.csv", REPO / "data" / "synthwildx.csv"]
    assert any(p.parent.name == "report_assets" for p in assets)
    missing = [p.relative_to(REPO).as_posix() for p in assets if not is_copied(p)]
    assert not missing


def test_the_image_runs_as_a_user_with_one_cache_volume():
    steps = instructions()
    users = [args for name, args in steps if name == "USER"]
    assert users and users[-1] not in ("root", "0")
    env = " ".join(args for name, args in steps if name == "ENV")
    weights = re.search(r"CLIPDET_WEIGHTS_DIR=(\S+)", env).group(1)
    hub = re.search(r"HF_HOME=(\S+)", env).group(1)
    volumes = re.findall(r'"([^"]+)"', " ".join(args for name, args in steps if name == "VOLUME"))
    assert len(volumes) == 1 and weights.startswith(volumes[0]) and hub.startswith(volumes[0])
    assert steps[-1] == ("ENTRYPOINT", '["python", "main.py"]')
