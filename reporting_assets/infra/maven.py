"""Jars from Maven Central: the local Kafka broker and Spark's Kafka connector.

The pom in ``reporting_assets/infra/kafka/pom.xml`` has one profile per classpath
(``broker``: Kafka 4.x, ``spark``: the connector with kafka-clients 3.9.x). Each
profile's jars land in their own folder of the jar cache, together with a marker
holding the pom's sha256, so a warm cache costs one file hash and no JVM.

    python -m reporting_assets.infra.maven     # fetch both (used by the Makefile)
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Literal, get_args

Profile = Literal["broker", "spark"]
PROFILES: tuple[Profile, ...] = get_args(Profile)

JAR_CACHE_ENV = "REPORTING_ASSETS_JAR_CACHE"
POM_PATH = Path(__file__).resolve().parent / "kafka" / "pom.xml"
MARKER_NAME = ".pom-sha256"

# The repo root is the folder that holds the ``reporting_assets`` package.
_REPO_ROOT = Path(__file__).resolve().parents[2]
# "spark-sql-kafka-0-10_2.13-4.2.0.jar" -> "spark-sql-kafka-0-10_2.13": the version is
# the last dash-separated part that starts with a dotted number.
_JAR_NAME = re.compile(r"^(?P<artifact>.+?)-(?P<version>\d+(?:\.\d+)+[^/]*)\.jar$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_MAVEN_FOOTER = re.compile(
    r"re-run Maven with the -e switch|Re-run Maven using the -X switch|For more information about the errors"
    r"|\[Help 1\] http"
)


class MavenError(RuntimeError):
    """Maven could not fetch the jars of a profile."""


def jar_cache_dir() -> Path:
    """Where fetched jars live: ``$REPORTING_ASSETS_JAR_CACHE`` or ``<repo root>/.cache/jars``."""
    configured = os.environ.get(JAR_CACHE_ENV, "").strip()
    return Path(configured).expanduser().resolve() if configured else _REPO_ROOT / ".cache" / "jars"


def pom_sha256(pom: Path = POM_PATH) -> str:
    return hashlib.sha256(pom.read_bytes()).hexdigest()


def ensure_jars(profile: Profile, *, pom: Path | None = None) -> Path:
    """Return the folder holding ``profile``'s jars, running Maven only when the pom changed.

    ``pom`` defaults to the project's ``reporting_assets/infra/kafka/pom.xml``.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown jar profile {profile!r}; expected one of {', '.join(PROFILES)}")
    pom = pom or POM_PATH
    target = jar_cache_dir() / profile
    digest = pom_sha256(pom)
    if _is_current(target, digest):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Download next to the target and swap it in, so a failed or interrupted run never
    # leaves a half-filled folder that looks complete.
    staging = Path(tempfile.mkdtemp(prefix=f".{profile}-", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it owner-only
    try:
        _run_maven(pom, profile, staging)
        (staging / MARKER_NAME).write_text(digest + "\n")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _is_current(target: Path, digest: str) -> bool:
    marker = target / MARKER_NAME
    try:
        return marker.read_text().strip() == digest
    except OSError:
        return False


def _run_maven(pom: Path, profile: Profile, output_dir: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise MavenError("mvn not found on PATH; install Maven 3.8+ to fetch the Kafka jars")
    command = [
        mvn,
        "-q",
        "-B",
        "-Dstyle.color=never",
        "-f",
        str(pom),
        f"-P{profile}",
        "dependency:copy-dependencies",
        f"-DoutputDirectory={output_dir}",
        "-DincludeScope=runtime",
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        output = _maven_messages(result.stdout + result.stderr)
        cause = next((line for line in output if line.startswith("[FATAL]")), None) or next(
            (line for line in output if line.startswith("[ERROR]")), "[ERROR] see below"
        )
        raise MavenError(
            f"mvn failed (exit {result.returncode}) fetching the {profile!r} jars from {pom}: "
            f"{cause.partition(']')[2].strip()}\n" + ("\n".join(output[-20:]) or "(no output)")
        )
    if not any(output_dir.glob("*.jar")):
        raise MavenError(f"mvn fetched no jars for profile {profile!r} (pom {pom})")


def _maven_messages(output: str) -> list[str]:
    """mvn's output without colour codes, blank lines and its generic help footer."""
    lines = [line.rstrip() for line in _ANSI.sub("", output).splitlines()]
    return [line for line in lines if line.removeprefix("[ERROR]").strip() and not _MAVEN_FOOTER.search(line)]


def artifact_name(jar: Path) -> str:
    """The artifact part of a jar's file name (``scala-library-2.13.15.jar`` -> ``scala-library``)."""
    match = _JAR_NAME.match(jar.name)
    return match["artifact"] if match else jar.stem


def pyspark_jars_dir() -> Path:
    import pyspark  # local import: only the Spark helpers need pyspark

    return Path(pyspark.__file__).resolve().parent / "jars"


def spark_connector_jars() -> list[Path]:
    """Jars to give Spark as ``spark.jars`` for the Kafka sink.

    Leaves out artifacts pyspark already ships (scala-library, slf4j, snappy, lz4,
    spark-tags, ...), so the classpath holds one version of each.
    """
    shipped = {artifact_name(jar) for jar in pyspark_jars_dir().glob("*.jar")}
    return sorted(jar for jar in ensure_jars("spark").glob("*.jar") if artifact_name(jar) not in shipped)


def main() -> int:
    try:
        for profile in PROFILES:
            folder = ensure_jars(profile)
            print(f"{profile} jars: {folder} ({len(list(folder.glob('*.jar')))} jars)")
    except MavenError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
