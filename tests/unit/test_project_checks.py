"""Project-level checks that CI and a newcomer meet: template validity, lint, pinned dependencies."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _sam() -> str | None:
    candidates = [os.environ.get("SAM_BIN"), str(ROOT / ".venv-sam/bin/sam"), shutil.which("sam")]
    return next((c for c in candidates if c and Path(c).exists()), None)


def test_sam_validate_lint() -> None:
    sam = _sam()
    if sam is None:
        if os.environ.get("CI"):
            pytest.fail("sam is not installed: `make test` installs it into .venv-sam")
        pytest.skip("sam not installed (make install-sam)")
    proc = subprocess.run(
        [sam, "validate", "--lint", "--template", str(ROOT / "template.yaml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "SAM_CLI_TELEMETRY": "0"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "is a valid SAM Template" in proc.stdout + proc.stderr


def test_cfn_lint() -> None:
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("cfn-lint")), str(ROOT / "template.yaml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_clean() -> None:
    ruff = Path(sys.executable).with_name("ruff")
    check = subprocess.run([str(ruff), "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    fmt = subprocess.run([str(ruff), "format", "--check", "."], cwd=ROOT, capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stdout


def test_mypy_clean() -> None:
    """The production code type-checks: the packages and settings are pyproject.toml's [tool.mypy]."""
    mypy = Path(sys.executable).with_name("mypy")
    proc = subprocess.run([str(mypy)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("Success: no issues found"), proc.stdout


def test_dependencies_are_pinned() -> None:
    for name in (
        "requirements-dev.txt",
        "layers/core/requirements.txt",
        "requirements-sam.txt",
        "requirements-translator.txt",
    ):
        for line in (ROOT / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line and not line.startswith("-r"):
                assert "==" in line, f"{name}: {line} is not pinned"


def test_the_local_translation_is_the_one_sam_deploys_with() -> None:
    """local/translate.py must run the transform `sam deploy` runs: the same aws-sam-translator as the
    pinned aws-sam-cli installs in its own venv (make install-sam)."""
    import importlib.metadata

    pinned = (ROOT / "requirements-translator.txt").read_text()
    (version,) = [
        ln.split("==")[1].strip() for ln in pinned.splitlines() if ln.startswith("aws-sam-translator==")
    ]
    assert importlib.metadata.version("aws-sam-translator") == version
    sam_python = ROOT / ".venv-sam" / "bin" / "python"
    if not sam_python.exists():
        pytest.skip("the SAM CLI venv is not installed (make install-sam)")
    proc = subprocess.run(
        [str(sam_python), "-c", "import importlib.metadata as m; print(m.version('aws-sam-translator'))"],
        capture_output=True,
        text=True,
    )
    assert proc.stdout.strip() == version, proc.stdout + proc.stderr


def test_production_code_never_imports_local() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for base in ("layers", "functions")
        for p in (ROOT / base).rglob("*.py")
        if "from local" in p.read_text() or "import local" in p.read_text()
    ]
    assert offenders == []


def test_no_local_mode_switch_in_production_code() -> None:
    needles = ("LOCAL_MODE", "IS_LOCAL", "AWS_SAM_LOCAL", "localhost", "127.0.0.1")
    offenders = [
        f"{p.relative_to(ROOT)}: {n}"
        for base in ("layers", "functions")
        for p in (ROOT / base).rglob("*.py")
        for n in needles
        if n in p.read_text()
    ]
    assert offenders == []


def test_sam_build_packages_every_function_and_the_core_layer(tmp_path: Path) -> None:
    """`make sam-build` (no containers) must succeed; each artifact holds its handler, the layer calbot."""
    if not (ROOT / ".venv-sam/bin/sam").exists():
        if os.environ.get("CI"):
            pytest.fail("sam is not installed: `make test` installs it into .venv-sam")
        pytest.skip("sam not installed (make install-sam)")
    from local.template import load_template

    build = tmp_path / "build"
    proc = subprocess.run(
        ["make", "--no-print-directory", "sam-build", f"BUILD_DIR={build}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    functions = load_template(ROOT / "template.yaml").functions
    assert functions
    for logical_id, spec in functions.items():
        built = build / logical_id / spec.module_path.relative_to(spec.code_uri)
        assert built.is_file(), f"{logical_id}: {built.name} missing from its artifact"
        assert built.read_bytes() == spec.module_path.read_bytes()
    layer = build / "CoreLayer/python"
    assert (layer / "calbot/__init__.py").is_file()
    assert {p.name for p in (layer / "calbot").glob("*.py")} >= {"http.py", "models.py"}
    assert (layer / "calbot/store/__init__.py").is_file()  # the store is a package (one module a record kind)
    # The functions run on arm64: pydantic-core must be the aarch64 build, not this machine's.
    assert list(layer.glob("pydantic_core/_pydantic_core*aarch64*.so"))


def test_make_help_lists_every_target_with_its_description() -> None:
    """`make help` (and plain `make`) lists every target the Makefile declares, each with a line of
    description taken from its `## ` comment."""
    import re

    makefile = (ROOT / "Makefile").read_text()
    phony = re.search(r"^\.PHONY:(.*?)(?<!\\)$", makefile, re.MULTILINE | re.DOTALL)
    assert phony is not None
    targets = phony.group(1).replace("\\\n", " ").split()
    assert {"dev", "test", "admin", "bench", "help"} <= set(targets)
    for args in (["help"], []):
        proc = subprocess.run(["make", "-s", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        listed = {}
        for line in proc.stdout.splitlines():
            match = re.match(r"\s*make (\S+)\s+(\S.*)$", line)
            if match:
                listed[match.group(1)] = match.group(2)
        assert set(listed) == set(targets), (sorted(set(targets) - set(listed)), proc.stdout)
        assert all(len(text) > 10 for text in listed.values()), listed
