"""Service jars copied from Maven Central by `mvn dependency:copy-dependencies`."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from infra.stack.process import ServiceError, run_checked


def copy_dependencies(pom: Path, libs_dir: Path, service: str) -> None:
    """Copy the pom's runtime dependencies into libs_dir, once per pom content (a stamp file
    holds the pom's digest, so a changed pom copies afresh)."""
    stamp = libs_dir / ".pom.sha256"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    if shutil.which("mvn") is None:
        raise ServiceError(f"{service}: Maven (mvn) not found. Install it: apt-get install maven")
    if libs_dir.exists():
        shutil.rmtree(libs_dir)
    run_checked(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={libs_dir.resolve()}",
        ],
        f"{service}: copying jars from Maven Central",
    )
    stamp.write_text(digest)
