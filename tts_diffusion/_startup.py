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

A light model load (the CLI's, in `light_loading()`: `is_light()`) also keeps `torch._dynamo`,
transformers and peft out of diffusers' imports: `without_dynamo()` and `without_transformers()`
import diffusers' modules with stand-ins in `sys.modules` for the few names those modules take
from them at import time (a recorder for `allow_in_graph`, a `torch.compiler.disable` that
calls through, and `lazy_class`es whose isinstance / issubclass answer what the real class
would: False while its module is not imported), and `pipelines/direct_load.py` loads the
embedded model's text encoder and tokenizer without transformers (`shapes/text_encoder.py`).
diffusers' map of installed distributions is computed when first read, not at its import
(`lazy_packages_distributions()`).
If torch._dynamo or transformers is imported later (a verifier, `--rgba`'s tokenizer calls),
everything they would have been told is handed to them then (`after_import`). So deferring
changes when code runs, never what it does (tests/test_startup.py compares the images and
sidecars of light and plain runs); the CLI defers and loads light unless `--compile` is given
(`replay` always), and nothing else does (`import tts_diffusion` and `TTSPipeline` import as usual).
"""
from __future__ import annotations

import contextlib
import functools
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator

#: packages whose `__init__` imports many modules a run of one model does not use
DEFERRED_PACKAGES = ("diffusers.models.transformers", "diffusers.models.unets", "diffusers.models.autoencoders",
                     "diffusers.hooks")
#: imported at module level, used only on paths a default run does not take (diffusers'
#: schedulers' beta sigmas: scipy.stats; the LMS scheduler, imported when any scheduler's config
#: is read: scipy.integrate; PixArt's clean_caption: ftfy; accelerate's SageMaker
#: configuration, imported by transformers' model loading: boto3)
DEFERRED_OPTIONAL = ("scipy.stats", "scipy.integrate", "ftfy", "boto3")


_MARK = "__tts_deferred__"


def defer_package(name: str, names: dict[str, Any] | None = None) -> ModuleType | None:
    """Put package `name` in sys.modules without running its `__init__` (None if it is already
    imported or not installed); the real `__init__` runs, in place, on the first access to an
    attribute the package lacks (and replaces `names`, attributes it holds until then)."""
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
        if attr.startswith("__") and attr not in ("__version__", "__all__"):  # import machinery probing
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

    module.__dict__.update(names or {})
    module.__dict__[_MARK] = True
    module.__getattr__ = __getattr__  # type: ignore[attr-defined]
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent in sys.modules:
        setattr(sys.modules[parent], child, module)
    return module


def defer_package_inits() -> list[str]:
    """Defer DEFERRED_OPTIONAL and DEFERRED_PACKAGES (see the module doc) and keep torch._dynamo
    out of diffusers' import (`without_dynamo`); for processes that do not compile. Returns the packages deferred (none already
    imported is touched)."""
    done = [name for name in DEFERRED_OPTIONAL if defer_package(name) is not None]
    if importlib.util.find_spec("diffusers") is None:
        return done
    with without_dynamo(), lazy_packages_distributions():
        import diffusers.models  # noqa: F401  (lazy in diffusers: imports only diffusers.utils)

    done += [name for name in DEFERRED_PACKAGES if defer_package(name) is not None]
    return done


def is_deferred(name: str) -> bool:
    """True while package `name` is in sys.modules with its `__init__` not yet run."""
    module = sys.modules.get(name)
    return module is not None and _MARK in module.__dict__


# ----------------------------------------------------------------------------- light processes
#: True inside `light_loading()`: the CLI loads a model for a run that does not compile, so
#: `pipelines/direct_load.py` may load the embedded model's light text side
#: (shapes/text_encoder.py) and import its classes in `without_dynamo()` / `without_transformers()`
_LIGHT = False


def is_light() -> bool:
    """True inside `light_loading()`."""
    return _LIGHT


@contextlib.contextmanager
def light_loading() -> Iterator[None]:
    """Models loaded inside this block (by the CLI, for a run that does not compile) are loaded
    light (see `is_light`); not thread-safe: the CLI's main thread only."""
    global _LIGHT
    before, _LIGHT = _LIGHT, True
    try:
        yield
    finally:
        _LIGHT = before


def after_import(name: str, hook: Callable[[ModuleType], None]) -> None:
    """Run hook(module) right after module `name` is first imported (at once if it already is)."""
    if name in sys.modules and not is_deferred(name):
        hook(sys.modules[name])
        return
    sys.meta_path.insert(0, _AfterImport(name, hook))


class _AfterImport(importlib.abc.MetaPathFinder):
    def __init__(self, name: str, hook: Callable[[ModuleType], None]):
        self.name, self.hook = name, hook

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname) if path is None else importlib.machinery.PathFinder.find_spec(
            fullname, path)
        if spec is None or spec.loader is None:
            return spec
        run, hook = spec.loader.exec_module, self.hook

        def exec_module(module: ModuleType) -> None:
            run(module)
            hook(module)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]  (this module's own loader)
        return spec


# diffusers.utils.import_utils calls importlib.metadata.packages_distributions() at import time
# (it reads the metadata of every installed distribution: about 0.8 s, the largest import
# after torch's) and reads the map only for a few optional packages, and only when they are
# installed. `lazy_packages_distributions()` gives it a mapping that computes the same dict on
# first use.
class _LazyMap(Mapping):
    def __init__(self, compute: Callable[[], dict]):
        self._compute, self._data = compute, None

    def _get(self) -> dict:
        if self._data is None:
            self._data = self._compute()
        return self._data

    def __getitem__(self, key: Any) -> Any:
        return self._get()[key]

    def __contains__(self, key: object) -> bool:
        return key in self._get()

    def __iter__(self) -> Iterator:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())


@contextlib.contextmanager
def lazy_packages_distributions() -> Iterator[None]:
    """Inside this block, `importlib.metadata.packages_distributions()` returns a mapping that
    computes the real answer when it is first read (see above)."""
    import importlib.metadata

    real = importlib.metadata.packages_distributions
    importlib.metadata.packages_distributions = lambda: _LazyMap(real)  # type: ignore[assignment]
    try:
        yield
    finally:
        importlib.metadata.packages_distributions = real


# torch._dynamo: diffusers.utils.torch_utils does `from torch._dynamo import allow_in_graph` at
# import time (about 1 s of imports: sympy, triton, torch.distributed) to mark a few classes for
# torch.compile, diffusers.hooks decorates methods with `torch.compiler.disable()` (which imports
# torch._dynamo), and `is_compiled_module` asks `torch._dynamo.eval_frame` whether a component is
# an OptimizedModule. A process that never compiles needs none of it, so `without_dynamo()`
# imports diffusers' modules with a stand-in `torch._dynamo` whose `allow_in_graph` records the
# classes (handed to the real one right after torch._dynamo is imported, if it ever is:
# `after_import`) and a `torch.compiler.disable` whose wrapper calls the function directly while
# torch._dynamo is not imported (nothing can be compiling then) and through the real
# `torch._dynamo.disable` once it is; `is_compiled_module` answers False while torch._dynamo is
# not imported (no OptimizedModule can exist before it is), else as before.
_ALLOWED_IN_GRAPH: list[Any] = []


def _allow_in_graph_later(fn: Any) -> Any:
    real = sys.modules.get("torch._dynamo")
    if real is not None and real.__dict__.get("allow_in_graph") not in (None, _allow_in_graph_later):
        return real.allow_in_graph(fn)
    _ALLOWED_IN_GRAPH.append(fn)
    return fn


def _replay_allow_in_graph(dynamo: ModuleType) -> None:
    for fn in _ALLOWED_IN_GRAPH:
        dynamo.allow_in_graph(fn)
    _ALLOWED_IN_GRAPH.clear()


def _disable_later(real_disable: Callable) -> Callable:
    """`torch.compiler.disable` that imports torch._dynamo only when it matters (see above)."""

    def disable(fn: Any = None, recursive: bool = True, *, reason: str | None = None) -> Any:
        if fn is None:
            return functools.partial(disable, recursive=recursive, reason=reason)
        if isinstance(fn, type) or not callable(fn):
            return real_disable(fn, recursive, reason=reason)
        disabled = None

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            nonlocal disabled
            if "torch._dynamo" not in sys.modules:
                return fn(*args, **kwargs)
            if disabled is None:
                disabled = real_disable(fn, recursive, reason=reason)
            return disabled(*args, **kwargs)

        return call

    return disable


@contextlib.contextmanager
def without_dynamo() -> Iterator[bool]:
    """Import diffusers modules inside this block without importing torch._dynamo (see above);
    yields False (and changes nothing) if torch._dynamo is already imported."""
    import torch
    import torch.compiler

    if "torch._dynamo" in sys.modules:
        yield False
        return
    stand_in = ModuleType("torch._dynamo")
    stand_in.allow_in_graph = _allow_in_graph_later  # type: ignore[attr-defined]
    real_disable = torch.compiler.disable
    sys.modules["torch._dynamo"] = stand_in
    torch.compiler.disable = _disable_later(real_disable)
    try:
        yield True
    finally:
        torch.compiler.disable = real_disable
        if sys.modules.get("torch._dynamo") is stand_in:
            del sys.modules["torch._dynamo"]
        if torch.__dict__.get("_dynamo") is stand_in:
            del torch._dynamo
        if not any(isinstance(f, _AfterImport) and f.name == "torch._dynamo" for f in sys.meta_path):
            after_import("torch._dynamo", _replay_allow_in_graph)
        _patch_is_compiled_module()


def _patch_is_compiled_module() -> None:
    torch_utils = sys.modules.get("diffusers.utils.torch_utils")
    original = getattr(torch_utils, "is_compiled_module", None)
    if original is None or getattr(original, "_tts_original", None) is not None:
        return

    @functools.wraps(original)
    def is_compiled_module(module: Any) -> bool:
        return "torch._dynamo" in sys.modules and original(module)

    is_compiled_module._tts_original = original  # type: ignore[attr-defined]
    for module in list(sys.modules.values()):  # diffusers.utils and modules that imported the name
        if getattr(module, "__name__", "").startswith("diffusers") and \
                getattr(module, "is_compiled_module", None) is original:
            module.is_compiled_module = is_compiled_module


# transformers and peft: diffusers' pipeline and loader modules import a few classes from them
# at import time (`PreTrainedModel`, `T5EncoderModel`, `T5Tokenizer`, peft's `BaseTunerLayer`,
# ...) for isinstance checks and annotations; importing any of them imports transformers'
# model machinery (and torch._dynamo with it). `without_transformers()` imports diffusers'
# modules with stand-ins in sys.modules that hand out `lazy_class` proxies for exactly those
# names; anything else asked of a stand-in imports the real package (slow, never wrong).
class _LazyClassMeta(type):
    """isinstance / issubclass answer what the real class answers: False while the module that
    defines it is not imported (nothing can be an instance of a class not yet defined); any
    other use (attributes, calls) imports the real class."""

    def _loaded(cls) -> type | None:
        module = sys.modules.get(cls._tts_module)
        return None if module is None or is_deferred(cls._tts_module) else getattr(module, cls._tts_name, None)

    def _resolve(cls) -> type:
        return getattr(importlib.import_module(cls._tts_module), cls._tts_name)

    def __instancecheck__(cls, obj: Any) -> bool:
        real = cls._loaded()
        return real is not None and isinstance(obj, real)

    def __subclasscheck__(cls, sub: type) -> bool:
        real = cls._loaded()
        return real is not None and issubclass(sub, real)

    def __getattr__(cls, attr: str) -> Any:
        if attr.startswith("_tts_"):
            raise AttributeError(attr)
        return getattr(cls._resolve(), attr)

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return cls._resolve()(*args, **kwargs)

    def __repr__(cls) -> str:
        return f"<lazy class {cls._tts_module}.{cls._tts_name}>"


def lazy_class(module: str, name: str) -> type:
    """A stand-in for class `module.name` that imports nothing until it is used (see _LazyClassMeta)."""
    return _LazyClassMeta(name, (), {"_tts_module": module, "_tts_name": name, "__module__": module})


class _StandIn(ModuleType):
    """A module in sys.modules during `without_transformers()`: its `names` are lazy classes
    (or constants); any other attribute imports the real module and answers from it."""

    def __init__(self, name: str, names: dict[str, Any]):
        super().__init__(name)
        self.__dict__.update(names)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        _remove_stand_ins()
        return getattr(importlib.import_module(self.__name__), attr)


def _source(module: str) -> Path | None:
    """The source file of `module`, found without importing it or its packages."""
    top, _, rest = module.partition(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    base = Path(list(spec.submodule_search_locations)[0]).joinpath(*(rest.split(".") if rest else []))
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None


def _module_constants(module: str, names: tuple[str, ...]) -> dict[str, str] | None:
    """String constants `NAME = "..."` assigned at the top level of `module`'s source, read
    without importing it (None if one is missing)."""
    import ast

    source = _source(module)
    try:
        tree = ast.parse(source.read_text(encoding="utf-8")) if source else None
    except (OSError, SyntaxError):
        tree = None
    found = {}
    for node in tree.body if tree else ():
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in names and isinstance(node.value, ast.Constant):
                found[node.targets[0].id] = node.value.value
    return found if set(found) == set(names) else None


#: stand-in module -> {name: module defining the class}: what diffusers' modules on the
#: embedded model's path import from transformers and peft at import time
LAZY_CLASSES = {
    "transformers": {"AutoImageProcessor": "transformers.models.auto.image_processing_auto",
                     "PreTrainedModel": "transformers.modeling_utils",
                     "T5EncoderModel": "transformers.models.t5.modeling_t5",
                     "T5Tokenizer": "transformers.models.t5.tokenization_t5"},
    "transformers.utils.quantization_config": {"QuantizationConfigMixin": "transformers.utils.quantization_config"},
    "peft.tuners.tuners_utils": {"BaseTunerLayer": "peft.tuners.tuners_utils"},
    # `from peft import PeftModel` in _unwrap_model, which register_modules calls when a pipeline is built
    "peft": {"PeftModel": "peft.peft_model"},
}
#: string constants diffusers' pipeline loading imports from transformers.utils
LAZY_CONSTANTS = {"transformers.utils": ("SAFE_WEIGHTS_NAME", "WEIGHTS_NAME")}
_STAND_INS: dict[str, ModuleType] = {}


def _remove_stand_ins() -> None:
    for name, module in list(_STAND_INS.items()):
        if sys.modules.get(name) is module:
            del sys.modules[name]
    _STAND_INS.clear()


@contextlib.contextmanager
def without_transformers() -> Iterator[bool]:
    """Import diffusers modules inside this block with transformers and peft stand-ins (see
    above); yields False (and does nothing) if transformers or peft is already imported or a
    class or constant the stand-ins name is not where they expect it."""
    wanted = {**LAZY_CLASSES, **LAZY_CONSTANTS}
    ready = not any(name.partition(".")[0] in sys.modules and not is_deferred(name.partition(".")[0])
                    for name in wanted)
    stand_ins: dict[str, ModuleType] = {}
    if ready:
        for name, classes in LAZY_CLASSES.items():
            if not all(_source(m) for m in classes.values()):
                ready = False
            stand_ins[name] = _StandIn(name, {k: lazy_class(m, k) for k, m in classes.items()})
        for name, consts in LAZY_CONSTANTS.items():
            values = _module_constants(name, consts)
            if values is None:
                ready = False
            stand_ins[name] = _StandIn(name, values or {})
    if not ready:
        yield False
        return
    _STAND_INS.update(stand_ins)
    sys.modules.update(stand_ins)
    try:
        yield True
    finally:
        _remove_stand_ins()
