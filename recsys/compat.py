"""Old module paths that artifacts already in registries were pickled under.

Models logged before the package was split into rooms name
``recsys.tracking.RecsysPyfuncModel`` (the pyfunc wrapper) and
``recsys.coldstart.ColdStart`` (the fallback chain) in their pickles. Pickle
imports those modules by name, so :func:`install` (run when ``recsys`` is
imported) answers each old name with the module that holds the class now.
Nothing new is ever written under an old name.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

#: Old module name → the module that holds its pickled classes now.
MOVED = {
    "recsys.tracking": "recsys.registry.pyfunc",
    "recsys.coldstart": "recsys.serving.coldstart",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module name as its new module (the same object, not a copy)."""

    def find_spec(
        self, name: str, path: object, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(name, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the new module is already imported."""


def install() -> None:
    """Put the finder on ``sys.meta_path`` once."""
    if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
        sys.meta_path.append(_MovedModules())
