"""``robsig er``: ER per model from a CSV table, scales, column names, JSON and bad rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import special

from robsig_checks.cli import main

HEADER = "model,imagenet,imagenet-v2,imagenet-r,imagenet-sketch,objectnet,imagenet-a\n"


def expected_er(acc_id, shifts, beta1=0.76, beta0=-1.49):
    return float(np.mean(shifts) - special.expit(beta1 * special.logit(acc_id) + beta0))


def run(capsys, *args):
    code = main(["er", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_percents_detected(tmp_path, capsys):
    table = tmp_path / "results.csv"
    table.write_text(HEADER + "clip,68.3,61.9,77.7,48.2,55.4,50.0\nrn50,76.1,63.2,36.2,24.1,36.3,0.0\n")
    code, out, _ = run(capsys, table, "--json")
    assert code == 0
    report = json.loads(out)
    assert report["scale"] == "percent"
    er = {row["model"]: row["effective_robustness"] for row in report["models"]}
    assert er["clip"] == pytest.approx(expected_er(0.683, [0.619, 0.777, 0.482, 0.554, 0.5]))
    assert er["rn50"] == pytest.approx(expected_er(0.761, [0.632, 0.362, 0.241, 0.363, 0.0]))


def test_fractions_table_text(tmp_path, capsys):
    table = tmp_path / "results.csv"
    table.write_text(HEADER + "m,0.5,0.6,0.5,0.4,0.3,0.2\n")
    code, out, _ = run(capsys, table)
    assert code == 0
    assert "read as fractions" in out
    er = expected_er(0.5, [0.6, 0.5, 0.4, 0.3, 0.2])
    assert f"{100 * er:+7.2f}" in out


def test_configurable_columns_and_semicolons(tmp_path, capsys):
    table = tmp_path / "results.csv"
    table.write_text("name;IN;v2;r\nA;80%;70%;60%\n")
    code, out, _ = run(capsys, table, "--model-column", "name", "--imagenet-column", "IN",
                       "--shift-columns", "v2,r", "--json")
    assert code == 0
    row = json.loads(out)["models"][0]
    assert row["model"] == "A"
    assert row["effective_robustness"] == pytest.approx(expected_er(0.8, [0.7, 0.6]))


@pytest.mark.parametrize("content, args, fragment", [
    (HEADER + "m,0.5,x,0.5,0.4,0.3,0.2\n", [], "results.csv:2: column 'imagenet-v2' has 'x'"),
    (HEADER + "m,0.5,0.6,0.5,0.4,0.3,140\n", [], "results.csv:2: column 'imagenet-a' has '140'"),
    ("model,imagenet\nm,0.5\n", [], "missing column(s) 'imagenet-v2'"),
    (HEADER, [], "no rows"),
    (HEADER + "m,50,60,50,40,30,20\n", ["--scale", "fraction"], "use --scale percent"),
    (HEADER + "a,0.5,0.6,0.5,0.4,0.3,0.2\nb,1.3,0.6,0.5,0.4,0.3,0.2\n", [],
     "the table mixes scales: line(s) 2 read as fractions (all values at most 1) and line(s) 3 as percents"),
])
def test_bad_tables_rejected(tmp_path, capsys, content, args, fragment):
    table = tmp_path / "results.csv"
    table.write_text(content)
    code, out, err = run(capsys, table, *args)
    assert code == 2
    assert fragment in err
    assert out == ""


def test_undefined_er_reported_per_row(tmp_path, capsys):
    table = tmp_path / "results.csv"
    table.write_text(HEADER + "perfect,1.0,0.6,0.5,0.4,0.3,0.2\n")
    code, out, _ = run(capsys, table, "--json")
    row = json.loads(out)["models"][0]
    assert code == 0
    assert row["effective_robustness"] is None
    assert "line 2" in row["error"]
    assert "strictly between 0 and 1" in row["error"]


def test_missing_file(tmp_path, capsys):
    code, _, err = run(capsys, tmp_path / "none.csv")
    assert code == 2
    assert "file not found" in err


def test_fit_refits_line_with_interval(tmp_path, capsys):
    accuracies = [0.55, 0.62, 0.7, 0.76, 0.81]
    rows = []
    for index, acc_id in enumerate(accuracies):
        shift = float(special.expit(0.9 * special.logit(acc_id) - 1.0))
        rows.append(f"m{index},{acc_id},{shift},{shift},{shift},{shift},{shift}\n")
    table = tmp_path / "results.csv"
    table.write_text(HEADER + "".join(rows))
    code, out, _ = run(capsys, table, "--fit", "--json")
    assert code == 0
    fit = json.loads(out)["fit"]
    assert fit["beta1"] == pytest.approx(0.9, abs=1e-9)
    assert fit["beta0"] == pytest.approx(-1.0, abs=1e-9)
    assert fit["n_models"] == 5
    code, out, _ = run(capsys, table, "--fit")
    assert "refit on 5 models: beta1 = 0.9000" in out


def test_fit_needs_three_models(tmp_path, capsys):
    table = tmp_path / "results.csv"
    table.write_text(HEADER + "a,0.5,0.4,0.4,0.4,0.4,0.4\nb,0.6,0.4,0.4,0.4,0.4,0.4\n")
    code, _, err = run(capsys, table, "--fit")
    assert code == 2
    assert "cannot refit the baseline from 2 usable models" in err
