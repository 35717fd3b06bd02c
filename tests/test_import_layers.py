"""The house drawn from the imports: no cycle inside a package, no import that climbs a layer.

The contracts live in pyproject.toml ([tool.importlinter]); `make lint` checks them too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from traffic_core.settings import REPO_ROOT

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def test_every_import_contract_is_kept() -> None:
    run = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout


def test_a_climbing_import_breaks_a_contract(tmp_path: Path) -> None:
    """The contracts can fail: a copy of the tree where the core imports a Dagster asset."""
    tree = tmp_path / "tree"
    for package in (
        "code_location",
        "sensors",
        "traffic_assets",
        "resources",
        "serving",
        "dashboard",
        "traffic_core",
    ):
        (tree / package).mkdir(parents=True)
        (tree / package / "__init__.py").write_text("")
    (tree / "pyproject.toml").write_text((REPO_ROOT / "pyproject.toml").read_text())
    (tree / "serving" / "schemas.py").write_text("")
    (tree / "dashboard" / "app.py").write_text("import serving.schemas\n")
    (tree / "traffic_core" / "windows.py").write_text("import traffic_assets\n")
    run = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=tree, capture_output=True, text=True
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Dagster side: each layer imports only the layers below it BROKEN" in run.stdout
    assert "1 broken" in run.stdout
