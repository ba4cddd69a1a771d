"""recsys-retrain: weekly retraining of a Spark ALS recommender, orchestrated by Airflow, tracked by MLflow.

The package is layered (see docs/architecture.md): ``core`` → ``io`` → ``data`` → ``validation`` →
``privacy`` → ``models`` → ``evaluation`` → ``training`` → ``promotion`` → ``experiments`` →
``reporting`` → ``pipeline`` → ``cli`` / ``airflow``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

__version__ = "0.1.0"

# Model versions registered before the package was layered hold a pickled MLflow ``python_model``
# that names these module paths. They stay loadable (rollback to an old champion, `recsys serve`)
# because each old path resolves to the module that holds the same classes today.
LEGACY_MODULES = {
    "recsys.serving": "recsys.models.serving",
    "recsys.model": "recsys.models.factors",
    "recsys.content": "recsys.models.content",
    "recsys.hybrid": "recsys.models.hybrid",
}


class _LegacyModulePaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves a path of LEGACY_MODULES to its module today (the same module object)."""

    def find_spec(
        self, fullname: str, path: object = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in LEGACY_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(LEGACY_MODULES[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        """The module is already executed under its new name."""


if not any(isinstance(finder, _LegacyModulePaths) for finder in sys.meta_path):
    sys.meta_path.append(_LegacyModulePaths())
