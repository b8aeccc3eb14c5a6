"""The ``robsig`` command: ``robsig list`` and ``robsig report RESULT.json``, run as a user runs them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from robsig_checks.cli import main
from robsig_checks.registry import default_registry
from test_plugin import ENGINEERED_CONFTEST, SUITE, expected_kurtosis, write_images
from test_verdicts import QUIET

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def robsig(*args: str, cwd=None) -> subprocess.CompletedProcess:
    executable = shutil.which("robsig")
    command = [executable, *args] if executable else [sys.executable, "-m", "robsig_checks.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.fixture
def saved_report(pytester: pytest.Pytester):
    pytester.makeconftest(ENGINEERED_CONFTEST)
    pytester.makefile(".yaml", sig=SUITE)
    write_images(pytester.path / "images")
    pytester.runpytest(*QUIET, "sig.yaml", "--robsig-report", "report.json", "--robsig-set", "kurtosis.min=1000")
    return pytester.path / "report.json"


def test_list_shows_one_line_per_entry():
    completed = robsig("list")
    assert completed.returncode == 0
    lines = completed.stdout.splitlines()
    registry = default_registry()
    for name in [*registry.model_adapters, *registry.datasets, *registry.checks, *registry.suites]:
        assert sum(1 for line in lines if line.split()[:1] == [name]) == 1, name
    assert "bundled suites:" in lines


def test_report_prints_table(saved_report):
    completed = robsig("report", str(saved_report), "--width", "120")
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[1] == "engineered"
    kurtosis = next(line for line in lines if line.lstrip().startswith("kurtosis"))
    assert kurtosis.split()[:7] == ["kurtosis", "images", "kurtosis", f"{expected_kurtosis():.4g}", ">=", "1000", "fail"]
    assert any(line.startswith("  data images: 6 images read, 1 skipped") for line in lines)


def test_report_writes_html_and_plots(saved_report, tmp_path):
    html = tmp_path / "out" / "report.html"
    completed = robsig("report", str(saved_report), "--html", str(html), "--plots", str(tmp_path / "plots"))
    assert completed.returncode == 0, completed.stderr
    assert html.read_text().startswith("<!DOCTYPE html>")
    assert f"robsig: HTML report written to {html}" in completed.stdout
    assert len(list((tmp_path / "plots").glob("*.png"))) == 3


def test_report_table_fits_narrow_terminal(saved_report, capsys):
    # Without cuts the rows need 68 characters, and only the metric column can shrink here.
    assert main(["report", str(saved_report), "--width", "64"]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = lines.index("engineered") + 1
    end = next(index for index, line in enumerate(lines) if line.startswith("  data "))
    table = lines[start:end]
    assert len(table) == 4
    assert table[3].split()[2] == "accura..."
    assert max(len(line) for line in table) <= 64


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "invalid JSON at line 1"),
        ('{"schema_version": 1}', "not a valid robsig report (schema version 1): 'created' is a required"),
    ],
)
def test_report_rejects_bad_file(tmp_path, capsys, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    assert main(["report", str(path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"robsig: {path}: ")
    assert message in error


def test_report_missing_file(tmp_path, capsys):
    assert main(["report", str(tmp_path / "none.json")]) == 2
    assert "none.json: file not found. Give the JSON file written by --robsig-report." in capsys.readouterr().err


def test_report_with_no_results(saved_report, capsys):
    report = json.loads(saved_report.read_text())
    report["results"] = []
    saved_report.write_text(json.dumps(report))
    assert main(["report", str(saved_report)]) == 0
    assert "robsig: the report has no results" in capsys.readouterr().out


def test_ci_example_uses_existing_options():
    from pathlib import Path

    import yaml

    from robsig_checks.options import OPTIONS

    workflow = yaml.safe_load((Path(__file__).parent.parent / "docs" / "github-actions.yml").read_text())
    steps = workflow["jobs"]["robsig"]["steps"]
    gate = next(step["run"] for step in steps if step.get("name") == "Gate the candidate")
    used = {word for word in gate.split() if word.startswith("--robsig")}
    assert used == {"--robsig-model", "--robsig-data", "--robsig-baseline", "--robsig-report", "--robsig-html",
                    "--robsig-plots"}
    assert used <= {flag for flag, *_ in OPTIONS}
    upload = next(step for step in steps if step.get("uses", "").startswith("actions/upload-artifact"))
    assert upload["if"] == "always()"
    assert "robsig-report.html" in upload["with"]["path"]
    cached = [step["with"]["path"] for step in steps if step.get("uses", "").startswith("actions/cache")]
    assert any(".cache/huggingface" in path for path in cached)
    assert any("data/" in path for path in cached)


def test_report_check_exit_status(saved_report, capsys):
    assert main(["report", str(saved_report), "--check", "--width", "80"]) == 1
    assert "robsig: 1 check(s) failed or errored in" in capsys.readouterr().err
    report = json.loads(saved_report.read_text())
    for result in report["results"]:
        result["verdict"] = "pass" if result["verdict"] == "fail" else result["verdict"]
    saved_report.write_text(json.dumps(report))
    assert main(["report", str(saved_report), "--check", "--width", "80"]) == 0
