"""Reproduce He et al. 2015, "Deep Residual Learning for Image Recognition".

Importing this package is cheap (no torch, no timm): the CLI's ``--help`` must stay instant. Our models are
registered with timm as soon as both this package and timm are imported, in whichever order.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"


def _register_with_timm() -> None:
    from resrepro.timm_models import register

    register()


class _AfterTimmImport(importlib.abc.MetaPathFinder):
    """Runs the timm registration right after ``import timm`` finishes, without importing timm ourselves."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "timm":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("timm")
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            _register_with_timm()

        spec.loader.exec_module = exec_then_register
        return spec


if "timm" in sys.modules:
    _register_with_timm()
elif importlib.util.find_spec("timm") is not None:
    sys.meta_path.insert(0, _AfterTimmImport())
