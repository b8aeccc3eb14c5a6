"""The ``robsig`` command: what is registered, outside of pytest."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from robsig_checks.errors import RobsigError


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def list_registered() -> str:
    """Return one line per registered model adapter, data set kind, check and bundled suite."""
    from robsig_checks.registry import default_registry

    registry = default_registry()
    lines = ["model adapters (spec PREFIX:...; anything else is ARCH:TAG for open_clip):"]
    lines += [f"  {name:28} {_first_line(factory.__doc__)}" for name, factory in sorted(registry.model_adapters.items())]
    lines.append("data set kinds:")
    lines += [f"  {name:28} {_first_line(factory.__doc__)}" for name, factory in sorted(registry.datasets.items())]
    lines.append("checks:")
    lines += [f"  {name:28} {cls.summary}" for name, cls in sorted(registry.checks.items())]
    lines.append("bundled suites:")
    lines += [f"  {name:28} {path}" for name, path in sorted(registry.suites.items())]
    return "\n".join(lines)


class _TextReporter:
    """The part of pytest's terminal reporter that ``write_summary`` uses, writing plain text to a stream."""

    def __init__(self, stream: Any, width: int) -> None:
        self._tw = SimpleNamespace(fullwidth=width)
        self.stream = stream

    def write_sep(self, sep: str, title: str) -> None:
        side = max((self._tw.fullwidth - len(title) - 2) // 2, 3)
        print(f"{sep * side} {title} {sep * side}", file=self.stream)

    def write_line(self, line: str, **markup: Any) -> None:
        print(line, file=self.stream)


def render_report(path: Path, html: Path | None, plots: Path | None, width: int | None,
                  stream: Any = None) -> dict[str, Any]:
    """Print the terminal tables of a saved JSON report and write its HTML page and plots when asked.

    Raises:
        RobsigError: when the file is missing, not JSON, or not a valid report, naming the path and the fix.
    """
    from robsig_checks.report.schema import validate_report
    from robsig_checks.report.terminal import write_summary

    stream = stream if stream is not None else sys.stdout
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RobsigError(f"{path}: file not found. Give the JSON file written by --robsig-report.") from None
    except (OSError, UnicodeDecodeError) as error:
        raise RobsigError(f"{path}: cannot read the file ({error}).") from None
    except json.JSONDecodeError as error:
        raise RobsigError(f"{path}: invalid JSON at line {error.lineno}: {error.msg}. Give the JSON file written by "
                          "--robsig-report.") from None
    validate_report(report, str(path))

    width = width or shutil.get_terminal_size().columns
    reporter = _TextReporter(stream, width)
    if report["results"]:
        write_summary(reporter, report["results"], report["data"])
    else:
        print("robsig: the report has no results", file=stream)
    if html is not None:
        from robsig_checks.report.html import write_html

        write_html(html, report)
        print(f"robsig: HTML report written to {html}", file=stream)
    if plots is not None:
        from robsig_checks.report.plots import write_plots

        written = write_plots(report, plots)
        print(f"robsig: plots written to {plots} ({len(written)} PNG files)", file=stream)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="robsig", description="Robustness signatures of vision models.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="show registered model adapters, data set kinds, checks and bundled suites")
    report = commands.add_parser("report", help="print the tables of a saved JSON report and render its HTML page")
    report.add_argument("result", type=Path, metavar="RESULT.json", help="JSON file written by --robsig-report")
    report.add_argument("--html", type=Path, metavar="PATH", help="write the self-contained HTML report to this file")
    report.add_argument("--plots", type=Path, metavar="DIR", help="write the plots as PNG files into this folder")
    report.add_argument("--width", type=int, metavar="COLUMNS", help="table width in characters (default: terminal)")
    report.add_argument("--check", action="store_true",
                        help="exit with status 1 when the report contains a failed or errored verdict, as pytest did")
    er = commands.add_parser("er", help="print effective robustness per model from a CSV table of accuracies")
    er.add_argument("results", type=Path, metavar="RESULTS.csv", help="CSV table, one row per model")
    er.add_argument("--model-column", default="model", help="column with the model name (default: model)")
    er.add_argument("--imagenet-column", default="imagenet", help="column with ImageNet accuracy (default: imagenet)")
    er.add_argument("--shift-columns", default="imagenet-v2,imagenet-r,imagenet-sketch,objectnet,imagenet-a",
                    help="comma-separated columns whose mean is ACC(S) (default: the five shifts)")
    er.add_argument("--scale", default="auto", choices=["auto", "fraction", "percent"],
                    help="accuracy scale: auto detects percents when a value is above 1 (default: auto)")
    er.add_argument("--beta1", type=float, default=0.76, help="slope of the baseline in logit space (default 0.76)")
    er.add_argument("--beta0", type=float, default=-1.49, help="intercept of the baseline in logit space (default -1.49)")
    er.add_argument("--json", action="store_true", help="print JSON instead of a table")
    er.add_argument("--fit", action="store_true",
                    help="also refit (beta1, beta0) on the table's models, with a bootstrap confidence interval")
    er.add_argument("--seed", type=int, default=0, help="seed of the bootstrap of --fit (default 0)")
    arguments = parser.parse_args(argv)
    try:
        if arguments.command == "list":
            print(list_registered())
        elif arguments.command == "er":
            from robsig_checks.er_table import compute_er_table, format_er_table

            shifts = [name.strip() for name in arguments.shift_columns.split(",") if name.strip()]
            if not shifts:
                raise RobsigError("--shift-columns: give at least one column name, e.g. imagenet-v2,imagenet-r.")
            table = compute_er_table(arguments.results, arguments.model_column, arguments.imagenet_column, shifts,
                                     arguments.scale, arguments.beta1, arguments.beta0)
            if arguments.fit:
                from robsig_checks.er_table import refit_table

                refit_table(table, seed=arguments.seed)
            print(json.dumps(table.to_dict(), indent=2) if arguments.json else format_er_table(table))
        elif arguments.command == "report":
            report = render_report(arguments.result, arguments.html, arguments.plots, arguments.width)
            failed = [f"{result['id']}[{result['model']}]" for result in report["results"]
                      if result["verdict"] in ("fail", "error")]
            if arguments.check and failed:
                print(f"robsig: {len(failed)} check(s) failed or errored in {arguments.result}: {', '.join(failed)}",
                      file=sys.stderr)
                return 1
    except OSError as error:
        print(f"robsig: failed to write: {error}", file=sys.stderr)
        return 2
    except RobsigError as error:
        print(f"robsig: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
