"""Jar cache: Maven runs only when the pom changed; Spark gets no duplicate jars."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from reporting_assets.infra import maven


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(maven.JAR_CACHE_ENV, str(tmp_path / "jars"))
    return tmp_path / "jars"


# A recording mvn: a line of arguments per start, and a jar named after the start's number. Shell
# built-ins only, so it can stand alone on PATH.
STUB_MVN = """#!/bin/sh
echo "$*" >> {log}
n=0
while read -r _; do n=$((n + 1)); done < {log}
for arg; do
  case $arg in -DoutputDirectory=*) : > "${{arg#-DoutputDirectory=}}/run-$n.jar" ;; esac
done
"""


@pytest.fixture
def mvn_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The log of a recording `mvn`, the only one on PATH: a real Maven cannot start unseen."""
    bin_dir, log = tmp_path / "bin", tmp_path / "mvn-starts.log"
    bin_dir.mkdir()
    log.touch()
    stub = bin_dir / "mvn"
    stub.write_text(STUB_MVN.format(log=shlex.quote(str(log))))
    stub.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    return log


def maven_starts(log: Path) -> list[str]:
    """The profile of each Maven start, in order."""
    return [arg.removeprefix("-P") for line in log.read_text().splitlines() for arg in line.split() if arg[:2] == "-P"]


def test_maven_runs_only_when_the_pom_changes(cache: Path, tmp_path: Path, mvn_log: Path) -> None:
    pom = tmp_path / "pom.xml"
    pom.write_text("<project>1</project>")

    folder = maven.ensure_jars("broker", pom=pom)
    assert folder == cache / "broker" and maven_starts(mvn_log) == ["broker"]
    assert (folder / maven.MARKER_NAME).read_text().strip() == maven.pom_sha256(pom)

    assert maven.ensure_jars("broker", pom=pom) == folder
    assert maven_starts(mvn_log) == ["broker"]  # a warm cache starts no Maven

    pom.write_text("<project>2</project>")
    maven.ensure_jars("broker", pom=pom)
    assert maven_starts(mvn_log) == ["broker", "broker"]
    assert [jar.name for jar in folder.glob("*.jar")] == ["run-2.jar"]  # no jars left from the old pom


def test_maven_failure_names_the_cause(cache: Path, tmp_path: Path) -> None:
    pom = tmp_path / "pom.xml"
    pom.write_text("<project")
    with pytest.raises(
        maven.MavenError, match=r"mvn failed \(exit 1\) fetching the 'spark' jars from .*Non-readable POM"
    ):
        maven.ensure_jars("spark", pom=pom)
    assert not (cache / "spark").exists()  # nothing that looks like a complete download


def test_unknown_profile() -> None:
    with pytest.raises(ValueError, match="unknown jar profile 'flink'"):
        maven.ensure_jars("flink")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("jar", "artifact"),
    [
        ("spark-sql-kafka-0-10_2.13-4.2.0.jar", "spark-sql-kafka-0-10_2.13"),
        ("scala-library-2.13.15.jar", "scala-library"),
        ("zstd-jni-1.5.6-10.jar", "zstd-jni"),
        ("jsr305-3.0.0.jar", "jsr305"),
    ],
)
def test_artifact_name(jar: str, artifact: str) -> None:
    assert maven.artifact_name(Path(jar)) == artifact


def test_spark_connector_jars_leave_out_what_pyspark_ships() -> None:
    jars = maven.spark_connector_jars()
    artifacts = {maven.artifact_name(jar) for jar in jars}
    assert {
        "spark-sql-kafka-0-10_2.13",
        "spark-token-provider-kafka-0-10_2.13",
        "kafka-clients",
        "commons-pool2",
    } <= artifacts
    shipped = {maven.artifact_name(jar) for jar in maven.pyspark_jars_dir().glob("*.jar")}
    assert not artifacts & shipped
    assert {"scala-library", "slf4j-api", "snappy-java", "lz4-java", "spark-tags_2.13"} <= shipped
    assert all(jar.is_absolute() and jar.is_file() for jar in jars)
    kafka_clients = [jar.name for jar in jars if maven.artifact_name(jar) == "kafka-clients"]
    assert kafka_clients[0].startswith("kafka-clients-3.")  # Spark's connector, not the broker's 4.x
