"""The documented JSON schema of robsig reports (``schema.json`` next to this module) and its validation."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any, Mapping

import jsonschema

from robsig_checks.errors import RobsigError


def report_schema() -> dict[str, Any]:
    """Return the JSON schema (draft 2020-12) of the report written by ``--robsig-report``."""
    return json.loads(resources.files("robsig_checks.report").joinpath("schema.json").read_text(encoding="utf-8"))


def validate_report(report: Mapping[str, Any], source: str = "report") -> None:
    """Raise :class:`RobsigError` naming ``source``, the first invalid key and the problem, unless ``report`` is valid."""
    from robsig_checks.checks.base import describe_schema_error

    validator = jsonschema.Draft202012Validator(report_schema())
    errors = sorted(validator.iter_errors(report), key=lambda error: list(error.absolute_path))
    if errors:
        raise RobsigError(f"{source}: not a valid robsig report (schema version 1): {describe_schema_error(errors[0])}. "
                          "Give a file written by --robsig-report.")
