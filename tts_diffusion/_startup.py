"""Start-up for commands that never compile: defer the package `__init__`s that a run does not need.

diffusers 0.42 imports, to build one PixArt transformer, every module under
`diffusers.models.transformers`, `.unets` and `.autoencoders` (their `__init__`s import all their
models eagerly), and `diffusers.hooks`, `scipy.stats`, `ftfy` and `boto3` likewise: seconds on a CPU
(docs/startup.md has the profile).

`defer_package_inits()` puts those packages in `sys.modules` without running their `__init__`;
importing one of their submodules (`diffusers.models.transformers.pixart_transformer_2d`) then loads
only that submodule. The first attribute a deferred package is asked for that it does not hold
runs its real `__init__` in place (PEP 562 `__getattr__`), so code that needs the whole package
still gets it, late.

`torch._dynamo` stays: diffusers' `register_modules` asks `torch._dynamo.eval_frame` whether each
component is compiled, and transformers and torchvision import its submodules directly, which
need its `__init__` to have run (docs/startup.md). A package is deferred only when nothing in
it is needed at import time, so deferring changes when code runs, never what it does;
the CLI defers unless `--compile` is given, and nothing else does (`import tts_diffusion` and
`TTSPipeline` import as usual).
"""
from __future__ import annotations

import importlib.util
import sys
from types import ModuleType
from typing import Any

#: packages whose `__init__` imports many modules a run of one model does not use
DEFERRED_PACKAGES = ("diffusers.models.transformers", "diffusers.models.unets", "diffusers.models.autoencoders",
                     "diffusers.hooks")
#: imported at module level, used only on paths a default run does not take (diffusers'
#: schedulers' beta sigmas: scipy.stats; PixArt's clean_caption: ftfy; accelerate's SageMaker
#: configuration, imported by transformers' model loading: boto3)
DEFERRED_OPTIONAL = ("scipy.stats", "ftfy", "boto3")


_MARK = "__tts_deferred__"


def defer_package(name: str) -> ModuleType | None:
    """Put package `name` in sys.modules without running its `__init__` (None if it is already
    imported or not installed); the real `__init__` runs, in place, on the first access to an
    attribute the package lacks."""
    if name in sys.modules:
        return None
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.submodule_search_locations is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)

    def __getattr__(attr: str) -> Any:
        if attr.startswith("__"):  # import machinery probing (__path__ is set): nothing to load
            raise AttributeError(attr)
        saved = dict(module.__dict__)
        module.__dict__.pop("__getattr__", None)
        module.__dict__.pop(_MARK, None)
        try:
            spec.loader.exec_module(module)  # the real __init__, in place: submodules already loaded are reused
        except BaseException:
            module.__dict__.update(saved)
            raise
        return getattr(module, attr)

    module.__dict__[_MARK] = True
    module.__getattr__ = __getattr__  # type: ignore[attr-defined]
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent in sys.modules:
        setattr(sys.modules[parent], child, module)
    return module


def defer_package_inits() -> list[str]:
    """Defer DEFERRED_OPTIONAL and DEFERRED_PACKAGES (see the module doc); for processes that
    do not compile. Returns the packages deferred (none already imported is touched)."""
    done = [name for name in DEFERRED_OPTIONAL if defer_package(name) is not None]
    if importlib.util.find_spec("diffusers") is None:
        return done
    import diffusers.models  # noqa: F401  (lazy in diffusers: imports only diffusers.utils)

    done += [name for name in DEFERRED_PACKAGES if defer_package(name) is not None]
    return done


def is_deferred(name: str) -> bool:
    """True while package `name` is in sys.modules with its `__init__` not yet run."""
    module = sys.modules.get(name)
    return module is not None and _MARK in module.__dict__
