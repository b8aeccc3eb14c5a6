"""The JSON report against its documented schema, and the round trip: write, validate, read, re-render."""

from __future__ import annotations

import io
import json

import jsonschema
import pytest

# Inline pytester runs drop the modules first imported inside them; importing matplotlib here keeps the
# HTML plots from importing it again in every run.
import matplotlib.backends.backend_agg  # noqa: F401
import matplotlib.figure  # noqa: F401

from robsig_checks.cli import render_report
from robsig_checks.errors import RobsigError
from robsig_checks.report.json_report import SCHEMA_VERSION, write_report
from robsig_checks.report.schema import report_schema, validate_report
from test_plugin import ENGINEERED_CONFTEST, SUITE, write_images
from test_verdicts import QUIET, RELATIVE_SUITE

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def finished(pytester: pytest.Pytester) -> tuple[pytest.Pytester, pytest.RunResult]:
    """A project after two runs: one that saved a baseline, one gated on it with every output written."""
    pytester.makeconftest(ENGINEERED_CONFTEST)
    pytester.makefile(".yaml", sig=SUITE, rel=RELATIVE_SUITE)
    write_images(pytester.path / "images")
    pytester.runpytest(*QUIET, "sig.yaml", "--robsig-save-baseline", "base.json")
    result = pytester.runpytest(*QUIET, "rel.yaml", "--robsig-model", "engineered",
                                "--robsig-model", "weakhead", "--robsig-baseline", "base.json",
                                "--robsig-report", "out/report.json", "--robsig-html", "out/report.html")
    return pytester, result


def table_lines(lines: list[str]) -> list[str]:
    """Return the lines of the robsig summary, from its separator up to the small-sample note."""
    start = next(index for index, line in enumerate(lines) if "robsig: robustness signatures" in line)
    end = next(index for index, line in enumerate(lines) if line.startswith("note: verdicts on fewer"))
    return [line.rstrip() for line in lines[start + 1 : end]]


def test_report_validates_against_schema(finished):
    project, _ = finished
    report = json.loads((project.path / "out/report.json").read_text())
    jsonschema.Draft202012Validator.check_schema(report_schema())
    jsonschema.Draft202012Validator(report_schema()).validate(report)
    assert report["schema_version"] == SCHEMA_VERSION == 1


def test_report_records_protocol_and_baseline(finished):
    project, _ = finished
    report = json.loads((project.path / "out/report.json").read_text())
    suite = report["suites"][0]
    assert suite["name"] == "sig"
    assert suite["data"]["images"]["kind"] == "folder"
    kurtosis = next(check for check in suite["checks"] if check["id"] == "kurtosis")
    assert kurtosis["relative"] == [{"metric": "kurtosis", "min_ratio": 0.9}]
    assert kurtosis["params"] == {"min": 3.0}
    assert report["baseline"]["models"] == ["engineered"]
    assert report["baseline"]["path"] == "base.json"
    assert report["data"]["weakhead"]["images"]["fingerprint"] == report["data"]["engineered"]["images"]["fingerprint"]


def test_round_trip_rerenders_same_table(finished):
    project, result = finished
    report = json.loads((project.path / "out/report.json").read_text())
    validate_report(report)

    stream = io.StringIO()
    render_report(project.path / "out/report.json", html=project.path / "again.html", plots=None, width=80,
                  stream=stream)
    assert table_lines(stream.getvalue().splitlines()) == table_lines(result.stdout.lines)
    assert (project.path / "again.html").read_text() == (project.path / "out/report.html").read_text()


def test_schema_rejects_unknown_verdict(finished):
    project, _ = finished
    report = json.loads((project.path / "out/report.json").read_text())
    report["results"][0]["verdict"] = "maybe"
    with pytest.raises(RobsigError) as error:
        validate_report(report, "report.json")
    assert "report.json: not a valid robsig report (schema version 1): results[0].verdict: 'maybe' is not allowed" \
        in str(error.value)


def test_schema_rejects_missing_key(finished):
    project, _ = finished
    report = json.loads((project.path / "out/report.json").read_text())
    del report["results"][1]["outcomes"][0]["threshold"]
    with pytest.raises(RobsigError, match=r"results\[1\].outcomes\[0\]: 'threshold' is a required property"):
        validate_report(report)


def test_schema_rejects_other_version(finished):
    project, _ = finished
    report = json.loads((project.path / "out/report.json").read_text())
    report["schema_version"] = 2
    with pytest.raises(RobsigError, match="schema_version: 1 was expected"):
        validate_report(report)


def test_failed_write_keeps_previous_file(tmp_path):
    path = tmp_path / "report.json"
    write_report(path, {"schema_version": 1})
    with pytest.raises(TypeError):
        write_report(path, {"schema_version": 1, "bad": object()})
    assert json.loads(path.read_text()) == {"schema_version": 1}
    assert [entry.name for entry in tmp_path.iterdir()] == ["report.json"]
