"""Declared YAML suites: which checks run, on which data, with which thresholds.

A suite file looks like::

    name: default
    description: the three signatures on the embedded photos
    models: [efficientnet-lite0]        # used when no --robsig-model is given
    data:
      photos: {kind: embedded-photos}
      imagenet: {kind: folder, path: null, required: false, options: {labels: wnid}}
    checks:
      - id: kurtosis
        check: activation_kurtosis
        params: {min: 6.0}

Files are read with ``yaml.safe_load`` and validated against a JSON schema; every error names the
file, the line, the key and what is allowed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
import yaml

from robsig_checks.baseline import (RELATIVE_SCHEMA, apply_relative_override, describe_relative_error,
                                     normalize_relative)
from robsig_checks.checks.base import SEVERITIES, describe_schema_error
from robsig_checks.errors import RobsigError, SuiteError

if TYPE_CHECKING:
    from robsig_checks.registry import Registry

#: Data set kinds that read no path, so ``--robsig-data NAME=PATH`` cannot point them at a folder.
PATHLESS_KINDS = frozenset({"embedded-photos"})

#: Data set kinds that read a folder, so a declaration without a path waits for ``--robsig-data`` or
#: ``--robsig-data-root`` instead of failing.
FOLDER_KINDS = frozenset({"folder", "imagenet", "imagenet-v2", "imagenet-r", "imagenet-sketch", "objectnet",
                          "imagenet-a", "broden"})

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"

SUITE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["checks"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": NAME_PATTERN},
        "description": {"type": "string"},
        "models": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "data": {
            "type": "object",
            "propertyNames": {"pattern": NAME_PATTERN},
            "additionalProperties": {
                "type": "object",
                "required": ["kind"],
                "additionalProperties": False,
                "properties": {
                    "kind": {"type": "string"},
                    "path": {"type": ["string", "null"]},
                    "required": {"type": "boolean"},
                    "description": {"type": "string"},
                    "options": {"type": "object"},
                },
            },
        },
        "checks": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["check"],
                "additionalProperties": False,
                "properties": {
                    "id": {"type": "string", "pattern": NAME_PATTERN},
                    "check": {"type": "string"},
                    "description": {"type": "string"},
                    "data": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                    "severity": {"enum": list(SEVERITIES)},
                    "params": {"type": "object"},
                    "reference": {"type": "string", "minLength": 1},
                    "relative": RELATIVE_SCHEMA,
                },
            },
        },
    },
}


@dataclass(frozen=True)
class DataSpec:
    """A named data set of a suite. Two suites that declare the same data share one pass."""

    name: str
    kind: str
    path: str | None
    required: bool
    options: tuple[tuple[str, Any], ...] = ()
    description: str = ""

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.name, self.kind, self.path, repr(self.options))

    @property
    def available(self) -> bool:
        """Whether the data can be read: a folder kind needs a path."""
        return self.path is not None or self.kind not in FOLDER_KINDS


@dataclass
class CheckEntry:
    """One check of a suite, with its parameters merged from defaults, the suite and overrides."""

    id: str
    check: str
    params: dict[str, Any]
    data: list[str]
    severity: str
    line: int
    position: int = 0
    description: str = ""
    #: Thresholds relative to a baseline: ``{"metric": NAME, RULE: LIMIT}`` mappings (see ``baseline.RULES``).
    relative: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Suite:
    """A validated suite file."""

    name: str
    path: Path
    description: str
    models: list[str]
    data: dict[str, DataSpec]
    checks: list[CheckEntry] = field(default_factory=list)


def _node_at(node: yaml.Node, path: list[Any]) -> yaml.Node:
    """Follow ``path`` (keys and indices) through a composed YAML node tree as far as it goes."""
    for part in path:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == part:
                    node = value_node
                    break
            else:
                return node
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return node
    return node


def _key_line(node: yaml.Node, path: list[Any]) -> int:
    """Return the 1-based line of the key at ``path`` (or of the closest node found)."""
    if path and isinstance(parent := _node_at(node, path[:-1]), yaml.MappingNode):
        for key_node, _ in parent.value:
            if key_node.value == path[-1]:
                return key_node.start_mark.line + 1
    return _node_at(node, path).start_mark.line + 1


def parameter_hint(check_class: type, error: jsonschema.ValidationError) -> str:
    """Return `` (PARAM: its description)`` for an error inside a check's parameters, or an empty string."""
    path = list(error.absolute_path)
    if path and path[0] in check_class.parameters:
        return f" ({path[0]}: {check_class.parameters[path[0]]['description']})"
    return ""


def load_suite(path: Path, registry: "Registry") -> Suite:
    """Read, validate and resolve a suite file, or raise :class:`SuiteError` naming file, line and key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise SuiteError(f"{path}: cannot read the suite file ({error}).") from error
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(error, "problem", None) or str(error)
        raise SuiteError(f"{where}: invalid YAML: {problem}. Fix the syntax at that line.") from error
    if root is None or document is None:
        raise SuiteError(f"{path}:1: the suite is empty; it needs at least a `checks:` list.")

    def fail(location: list[Any], message: str) -> SuiteError:
        return SuiteError(f"{path}:{_key_line(root, location)}: {message}")

    errors = sorted(jsonschema.Draft202012Validator(SUITE_SCHEMA).iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        location = list(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
            location += [key for key in error.instance if key not in allowed][:1]
        if "relative" in location[:3]:
            raise fail(location, describe_relative_error(error))
        raise fail(location, describe_schema_error(error))

    data = {}
    for name, entry in (document.get("data") or {}).items():
        if entry["kind"] not in registry.datasets:
            raise fail(["data", name, "kind"], f"data.{name}.kind: unknown data set kind {entry['kind']!r}; "
                       f"registered kinds: {', '.join(sorted(registry.datasets))}")
        entry_path = entry.get("path")
        if entry_path is not None and not Path(entry_path).expanduser().is_absolute():
            entry_path = str((path.parent / entry_path).resolve())
        data[name] = DataSpec(
            name=name,
            kind=entry["kind"],
            path=entry_path,
            required=entry.get("required", entry_path is not None or entry["kind"] not in FOLDER_KINDS),
            options=tuple(sorted((entry.get("options") or {}).items())),
            description=entry.get("description", ""),
        )

    checks: list[CheckEntry] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(document["checks"]):
        location = ["checks", index]
        if entry["check"] not in registry.checks:
            raise fail(location + ["check"], f"checks[{index}].check: unknown check {entry['check']!r}; "
                       f"registered checks: {', '.join(sorted(registry.checks))}")
        check_class = registry.checks[entry["check"]]
        check_id = entry.get("id", entry["check"])
        if check_id in seen:
            raise fail(location + ["id"], f"checks[{index}].id: {check_id!r} is already used by the check on line "
                       f"{seen[check_id]}; give each check a unique id")
        seen[check_id] = _key_line(root, location + ["check"])

        params = dict(entry.get("params") or {})
        if "reference" in entry:
            if "reference" not in check_class.parameters:
                raise fail(location + ["reference"], f"checks[{index}] ({check_id}).reference: check {entry['check']!r} "
                           "compares with no reference model; remove the key")
            params["reference"] = entry["reference"]
        param_errors = list(jsonschema.Draft202012Validator(check_class.params_schema()).iter_errors(params))
        if param_errors:
            error = param_errors[0]
            described = describe_schema_error(error) + parameter_hint(check_class, error)
            raise fail(location + ["params", *error.absolute_path], f"checks[{index}] ({check_id}).params: {described}")

        names = entry.get("data") or list(data)
        for position, name in enumerate(names):
            if name not in data:
                raise fail(location + ["data", position], f"checks[{index}] ({check_id}).data: unknown data set "
                           f"{name!r}; this suite declares: {', '.join(data) or 'none'}")
        if not names:
            raise fail(location, f"checks[{index}] ({check_id}): no data set to run on; declare one under `data:`")

        defaults = {key: copy.deepcopy(spec["default"]) for key, spec in check_class.parameters.items()}
        checks.append(CheckEntry(
            id=check_id,
            check=entry["check"],
            params={**defaults, **params},
            data=list(names),
            severity=entry.get("severity", "fail"),
            line=seen[check_id],
            position=index,
            description=entry.get("description", check_class.summary),
            relative=normalize_relative(entry.get("relative")),
        ))

    return Suite(
        name=document.get("name", path.stem),
        path=path,
        description=document.get("description", ""),
        models=list(document.get("models") or []),
        data=data,
        checks=checks,
    )


def parse_assignment(text: str, option: str) -> tuple[str, str]:
    """Split ``NAME=VALUE`` from a command-line option, or raise naming the option and the value."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise RobsigError(f"{option} {text!r}: expected NAME=VALUE, e.g. {option} imagenet=/data/imagenet/val")
    return name.strip(), value.strip()


def apply_data_paths(suite: Suite, paths: dict[str, str]) -> None:
    """Point data sets at paths from ``--robsig-data``; unknown names become new folder data sets."""
    for name, value in paths.items():
        resolved = str(Path(value).expanduser().resolve())
        if name in suite.data and suite.data[name].kind in PATHLESS_KINDS:
            raise RobsigError(f"--robsig-data {name}={value}: data set {name!r} of suite {suite.name!r} is of kind "
                              f"{suite.data[name].kind}, which reads no folder. Choose another name, e.g. "
                              f"--robsig-data mine={value}")
        if name in suite.data:
            spec = suite.data[name]
            suite.data[name] = DataSpec(name, spec.kind, resolved, True, spec.options, spec.description)
        else:
            suite.data[name] = DataSpec(name, "folder", resolved, True, (), "given with --robsig-data")
            for entry in suite.checks:
                entry.data.append(name)


def apply_reference(suite: Suite, reference: str, registry: "Registry") -> None:
    """Give ``reference`` to every check of the suite that takes a reference model and names none."""
    for entry in suite.checks:
        if "reference" in registry.checks[entry.check].parameters and not entry.params.get("reference"):
            entry.params["reference"] = reference


def apply_param_overrides(suite: Suite, overrides: list[str], registry: "Registry") -> None:
    """Apply ``CHECK.PARAM=VALUE`` overrides, where CHECK is a check id or a check name of the suite."""
    for text in overrides:
        target, value_text = parse_assignment(text, "--robsig-set")
        relative = [(entry, target[len(name) + len(".relative"):]) for entry in suite.checks
                    for name in dict.fromkeys((entry.id, entry.check))
                    if target == f"{name}.relative" or target.startswith(f"{name}.relative.")]
        if relative:
            for entry, path in relative:
                try:
                    apply_relative_override(entry, path, value_text)
                except RobsigError as error:
                    raise RobsigError(f"--robsig-set {text!r}: {error}") from None
            continue
        check_name, dot, param = target.rpartition(".")
        if not dot or not check_name or not param:
            raise RobsigError(f"--robsig-set {text!r}: expected CHECK.PARAM=VALUE, e.g. --robsig-set kurtosis.min=4")
        entries = [entry for entry in suite.checks if check_name in (entry.id, entry.check)]
        if not entries:
            known = sorted({entry.id for entry in suite.checks} | {entry.check for entry in suite.checks})
            raise RobsigError(f"--robsig-set {text!r}: suite {suite.name!r} has no check {check_name!r}; "
                              f"its checks are: {', '.join(known)}")
        value = yaml.safe_load(value_text)
        for entry in entries:
            check_class = registry.checks[entry.check]
            if param not in check_class.parameters:
                raise RobsigError(f"--robsig-set {text!r}: check {entry.check!r} has no parameter {param!r}; "
                                  f"its parameters are: {', '.join(sorted(check_class.parameters))}")
            candidate = {**entry.params, param: value}
            errors = list(jsonschema.Draft202012Validator(check_class.params_schema()).iter_errors(candidate))
            if errors:
                hint = parameter_hint(check_class, errors[0])
                raise RobsigError(f"--robsig-set {text!r}: {describe_schema_error(errors[0])}{hint}")
            entry.params = candidate
