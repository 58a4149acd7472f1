"""`console.libraries_to`: fd 2, of this process and of the processes it starts, goes to the log."""

from __future__ import annotations

import os
import subprocess
import sys

from reporting_assets.console import failed, libraries_to, log_path


def test_stderr_of_the_process_and_its_children_goes_to_the_log_and_comes_back(tmp_path, capfd):
    log = log_path(tmp_path, "run")
    with libraries_to(log) as named:
        os.write(2, b"a library's warning\n")  # as Python's warnings module and logging do, on fd 2
        subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('a JVM WARN line')"], check=True)
        print("the command's own line")
    print("after", file=sys.stderr)
    out, err = capfd.readouterr()
    assert named == log and log.parent == tmp_path / "logs"
    assert "a library's warning" in log.read_text() and "a JVM WARN line" in log.read_text()
    assert out == "the command's own line\n" and err == "after\n"


def test_verbose_leaves_the_console_alone(tmp_path, capfd):
    with libraries_to(log_path(tmp_path, "run"), verbose=True) as named:
        subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('a JVM WARN line')"], check=True)
    assert named is None and capfd.readouterr().err == "a JVM WARN line"
    assert not (tmp_path / "logs").exists()


def test_a_failure_is_one_line_naming_the_log_that_holds_its_traceback(tmp_path, capsys):
    log = log_path(tmp_path, "run")
    try:
        raise RuntimeError("the broker went away")
    except RuntimeError:
        assert failed(log, "reporting_assets") == 1
    assert capsys.readouterr().err == f"reporting_assets: error: the run failed; the traceback is in {log}\n"
    assert "Traceback" in log.read_text() and "RuntimeError: the broker went away" in log.read_text()
