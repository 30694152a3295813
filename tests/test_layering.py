"""Dependency direction: curate -> (baselines, evals) -> solvers, never back up."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"solvers": {"curate", "baselines", "evals"}, "baselines": {"curate", "evals"}, "evals": {"curate",
                                                                                                    "baselines"}}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_lower_packages_never_import_upwards(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package} has no modules"
    bad = {str(f.relative_to(ROOT)): sorted(_imports(f) & FORBIDDEN[package]) for f in files}
    assert {k: v for k, v in bad.items() if v} == {}


def test_base_install_commands_do_not_import_torch():
    import subprocess
    import sys

    code = ("import sys; import curate.cli, curate.ingest, curate.resample, curate.export; "
            "print('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"


def test_solvers_common_does_not_import_torch():
    """The shared floor (atomic writer, normaliser, top-k, step record) must stay usable by the base install."""
    import subprocess
    import sys

    code = ("import sys; import solvers.common, solvers.common.io; "
            "print('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"
