"""``--robsig-data-root``: one folder that contains ImageNet and its shifts under their usual names."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from robsig_checks.suite import Suite


def apply_data_root(suite: "Suite", root: Path) -> dict[str, str]:
    """Point the suite's ImageNet data sets that have no path at the matching folder under ``root``.

    A data set matches a variant by its kind (``imagenet-r`` ...) or, for a ``folder`` data set, by
    its name. The folder names tried are listed in ``ROOT_FOLDER_NAMES``. Paths given with
    ``--robsig-data`` or in the suite are kept. Returns the paths set, by data set name.
    """
    from robsig_checks.datasets.imagenet_variants import VARIANTS, find_root_folder
    from robsig_checks.suite import DataSpec

    applied = {}
    for name, spec in list(suite.data.items()):
        if spec.path is not None:
            continue
        if spec.kind in VARIANTS:
            variant = spec.kind
        elif spec.kind == "folder" and name in VARIANTS:
            variant = name
        else:
            continue
        folder = find_root_folder(root, variant)
        if folder is not None:
            suite.data[name] = DataSpec(name, spec.kind, str(folder), True, spec.options, spec.description)
            applied[name] = str(folder)
    return applied
