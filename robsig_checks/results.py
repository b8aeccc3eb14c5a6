"""Results as plain data: what reports, baselines and plots read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from robsig_checks.checks.base import Outcome

#: Verdicts of one (check, model) item.
VERDICTS = ("pass", "fail", "warn", "info", "skip", "error")


@dataclass
class CheckResult:
    """The verdict of one check of a suite on one model, over every data set it ran on."""

    suite: str
    id: str
    check: str
    model: str
    severity: str
    params: dict[str, Any]
    verdict: str = "pass"
    message: str = ""
    outcomes: list[Outcome] = field(default_factory=list)
    missing_data: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    position: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "id": self.id,
            "check": self.check,
            "model": self.model,
            "severity": self.severity,
            "params": self.params,
            "verdict": self.verdict,
            "message": self.message,
            "outcomes": [outcome.to_dict() for outcome in self.outcomes],
            "missing_data": list(self.missing_data),
            "errors": dict(self.errors),
            "position": self.position,
            "seconds": round(self.seconds, 3),
        }


def verdict_for(outcomes: list[Outcome], severity: str) -> str:
    """Combine per-data-set outcomes: any failure decides, softened by the severity."""
    if not outcomes:
        return "skip"
    if all(outcome.passed is None for outcome in outcomes):
        return "info"
    if all(outcome.passed is not False for outcome in outcomes):
        return "pass"
    return {"fail": "fail", "warn": "warn", "info": "info"}[severity]


def sorted_results(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Order results by model (first appearance), then by the check's position in its suite."""
    models = list(dict.fromkeys(result["model"] for result in results))
    return sorted(results, key=lambda r: (models.index(r["model"]), r["suite"], r.get("position", 0)))
