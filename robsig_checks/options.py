"""Command-line and ini options of the pytest plugin, read once into one object."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from robsig_checks.errors import RobsigError

GROUP = "robsig"

# (option, ini name, kind, help). Kinds: "list" is repeatable on the command line and a line list in ini files.
OPTIONS: list[tuple[str, str, str, str]] = [
    ("--robsig-model", "robsig_model", "list",
     "model to check, repeatable: ARCH:TAG for open_clip (ViT-B-16:laion2b), ARCH:/path/weights, "
     "timm:NAME[:WEIGHTS], or a name registered by a plugin (efficientnet-lite0)"),
    ("--robsig-suite", "robsig_suite", "str",
     "suite to run: a YAML file or the name of a bundled suite (default: the bundled 'default' suite)"),
    ("--robsig-data", "robsig_data", "list",
     "NAME=PATH, repeatable: folder of images for the data set NAME of the suite (a new NAME adds a folder "
     "data set used by every check)"),
    ("--robsig-data-root", "robsig_data_root", "str",
     "folder holding ImageNet and its shifts under their usual names (imagenet, imagenet-v2, imagenet-r, "
     "imagenet-sketch, objectnet, imagenet-a): fills the data sets of the suite that have no path"),
    ("--robsig-device", "robsig_device", "str", "torch device for the forward passes (default: cpu)"),
    ("--robsig-batch-size", "robsig_batch_size", "int", "images per forward batch (default: 32)"),
    ("--robsig-limit", "robsig_limit", "int", "read at most this many images of each data set (default: all)"),
    ("--robsig-set", "robsig_set", "list",
     "CHECK.PARAM=VALUE, repeatable: override a check parameter or threshold, e.g. kurtosis.min=4"),
    ("--robsig-report", "robsig_report", "str", "write every metric and verdict to this JSON file"),
    ("--robsig-save-baseline", "robsig_save_baseline", "str",
     "write every metric of this run, with weights hashes and data fingerprints, to this baseline JSON file"),
    ("--robsig-baseline", "robsig_baseline", "str",
     "baseline JSON file (or JSON report) that relative thresholds such as min_ratio compare against"),
    ("--robsig-allow-data-mismatch", "robsig_allow_data_mismatch", "bool",
     "compare against the baseline even when a data set's fingerprint differs from the one it recorded"),
    ("--robsig-reference", "robsig_reference", "str",
     "reference model spec for checks that compare with one (cka_last_layer_drop) and name none in the suite"),
    ("--robsig-html", "robsig_html", "str", "write a self-contained HTML report with plots to this file"),
    ("--robsig-plots", "robsig_plots", "str", "write the report's plots as PNG files into this folder"),
]


def add_options(parser: pytest.Parser) -> None:
    """Register every option on the command line and as an ini key."""
    group = parser.getgroup(GROUP, "robsig: robustness signatures of vision models")
    for flag, ini_name, kind, help_text in OPTIONS:
        if kind == "list":
            group.addoption(flag, action="append", dest=ini_name, default=None, metavar="VALUE", help=help_text)
            parser.addini(ini_name, help=help_text, type="linelist", default=[])
        elif kind == "bool":
            group.addoption(flag, action="store_true", dest=ini_name, default=None, help=help_text)
            parser.addini(ini_name, help=help_text, type="bool", default=False)
        else:
            group.addoption(flag, action="store", dest=ini_name, default=None,
                            type=int if kind == "int" else str, help=help_text)
            parser.addini(ini_name, help=help_text, type="string", default="")


@dataclass
class RobsigOptions:
    """The resolved robsig options of one pytest run: command line first, then ini."""

    models: list[str] = field(default_factory=list)
    suite: str | None = None
    data: list[str] = field(default_factory=list)
    data_root: Path | None = None
    device: str = "cpu"
    batch_size: int = 32
    limit: int | None = None
    overrides: list[str] = field(default_factory=list)
    report: Path | None = None
    save_baseline: Path | None = None
    baseline: Path | None = None
    allow_data_mismatch: bool = False
    html: Path | None = None
    plots: Path | None = None
    reference: str | None = None
    given: bool = False

    @classmethod
    def from_config(cls, config: pytest.Config) -> "RobsigOptions":
        values: dict[str, Any] = {}
        given = False
        for flag, ini_name, kind, _ in OPTIONS:
            value = config.getoption(ini_name)
            if value in (None, []):
                value = config.getini(ini_name)
                if kind == "list":
                    value = [line for line in value if line.strip()]
                elif kind == "bool":
                    value = True if value else None
                elif value == "":
                    value = None
                elif kind == "int":
                    value = _parse_int(flag, value)
            if value not in (None, []):
                given = True
            values[ini_name] = value

        options = cls(
            models=values["robsig_model"] or [],
            suite=values["robsig_suite"],
            data=values["robsig_data"] or [],
            data_root=Path(values["robsig_data_root"]).expanduser() if values["robsig_data_root"] else None,
            device=values["robsig_device"] or "cpu",
            batch_size=32 if values["robsig_batch_size"] is None else values["robsig_batch_size"],
            limit=values["robsig_limit"],
            overrides=values["robsig_set"] or [],
            report=Path(values["robsig_report"]) if values["robsig_report"] else None,
            save_baseline=Path(values["robsig_save_baseline"]) if values["robsig_save_baseline"] else None,
            baseline=Path(values["robsig_baseline"]) if values["robsig_baseline"] else None,
            allow_data_mismatch=bool(values["robsig_allow_data_mismatch"]),
            html=Path(values["robsig_html"]) if values["robsig_html"] else None,
            plots=Path(values["robsig_plots"]) if values["robsig_plots"] else None,
            reference=values["robsig_reference"],
            given=given,
        )
        if options.batch_size < 1:
            raise RobsigError(f"--robsig-batch-size {options.batch_size}: must be a positive integer, e.g. 32.")
        if options.report is not None and options.report.is_dir():
            raise RobsigError(f"--robsig-report {options.report}: is a folder. Give a file path, e.g. "
                              f"{options.report / 'robsig-report.json'}.")
        for flag, path, example in (("--robsig-save-baseline", options.save_baseline, "robsig-baseline.json"),
                                    ("--robsig-html", options.html, "robsig-report.html")):
            if path is not None and path.is_dir():
                raise RobsigError(f"{flag} {path}: is a folder. Give a file path, e.g. {path / example}.")
        if options.plots is not None and options.plots.exists() and not options.plots.is_dir():
            raise RobsigError(f"--robsig-plots {options.plots}: is a file. Give a folder for the PNG files.")
        if options.data_root is not None and not options.data_root.is_dir():
            raise RobsigError(f"--robsig-data-root {options.data_root}: not a folder. Give the folder that contains "
                              "imagenet/, imagenet-v2/, imagenet-r/, imagenet-sketch/, objectnet/ and imagenet-a/.")
        if options.limit is not None and options.limit < 1:
            raise RobsigError(f"--robsig-limit {options.limit}: must be a positive number of images per data set.")
        return options


def _parse_int(flag: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise RobsigError(f"ini option for {flag}: {text!r} is not an integer.") from None
