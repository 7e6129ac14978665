"""Lazy public names for a package: imported from their modules on first attribute access (PEP 562), so
importing the package stays cheap (no TensorFlow until a name that needs it is used)."""

import importlib


def lazy_exports(package, exports):
    """`(__getattr__, __dir__)` for `package` (its `__name__`) serving `exports`: {public name: module}."""
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name):
        if name in exports:
            value = getattr(importlib.import_module(exports[name]), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
