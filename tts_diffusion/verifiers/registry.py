"""The verifier registry, which is also the catalog `tts-diffusion list` prints.

A verifier is built by a factory `f(**options) -> Verifier`. Its options are declared once,
in a `VerifierEntry` (declaration.py: name, description, options as params.py `Param`s) that
lives beside it in a module importing without torch (`clip_spec.py` beside `clip.py`). This
module imports no torch either: it holds every entry by name (registry.py's table), the
built-in ones from `BUILTIN` below, and imports a verifier's module (torch, weights on use) the first
time one is built. So `list`, `--verifier-option` parsing, `SearchRequest.check` and
`load_verifier` read the same declarations.

`load_verifier(name, **options)` validates the options, fills in the declared defaults and
calls the factory with them. An option declared with the default None is the factory's to
derive (from the device, the model, ...): it reaches the factory only when given, and None
given is passed as given (e.g. clip's `pretrained=None`: no pretrained tag)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..errors import TTSInputError
from ..params import Param, ParamSpec
from ..registry import Registry
from .aesthetic_spec import AESTHETIC
from .alpha_spec import ALPHA
from .clip_spec import CLIP
from .declaration import ExtraOption, VerifierEntry
from .ensemble_spec import ENSEMBLE
from .image_reward_spec import IMAGE_REWARD
from .oracle_spec import ORACLE

if TYPE_CHECKING:  # pragma: no cover
    from .base import Verifier

VerifierFactory = Callable[..., "Verifier"]


# ------------------------------------------------------------------ the built-in verifiers
#: one line each: its declaration (torch-free, beside it) and the module that defines and
#: registers its factory (imported on first use)
BUILTIN: tuple[tuple[VerifierEntry, str], ...] = (
    (CLIP, "clip"),
    (ORACLE, "oracle"),
    (IMAGE_REWARD, "image_reward"),
    (AESTHETIC, "aesthetic"),
    (ENSEMBLE, "ensemble"),
    (ALPHA, "alpha"),
)

_REGISTRY = Registry("verifier", BUILTIN, __package__)


def register_verifier(name: str | VerifierEntry, description: str = "", *, params: Sequence[Param] = (),
                      extra: ExtraOption | None = None) -> Callable[[VerifierFactory], VerifierFactory]:
    """Decorator: register a factory `f(**options) -> Verifier` under its declaration, either
    a `VerifierEntry` (the built-in verifiers' entries live in `<name>_spec.py` beside them) or
    a name with its description, params and extra (see `VerifierEntry`)."""
    if isinstance(name, VerifierEntry):
        if description or params or extra is not None:
            raise ValueError("register_verifier takes a VerifierEntry or a name with its description and params,"
                             " not both")
        entry = name
    else:
        entry = VerifierEntry.declare(name, description, params=params, extra=extra)

    def deco(factory: VerifierFactory) -> VerifierFactory:
        factory.entry = entry  # type: ignore[attr-defined]
        _REGISTRY.attach(entry, factory)
        return factory

    return deco


def verifier_entry(name: str) -> VerifierEntry:
    """The declaration of a registered verifier."""
    return _REGISTRY.slot(name).entry


def verifier_params(name: str) -> ParamSpec:
    """The declared options of a registered verifier."""
    return verifier_entry(name).params


def available_verifiers() -> dict[str, str]:
    """Name -> one-line description of every registered verifier, sorted by name."""
    return _REGISTRY.descriptions()


def differentiable_verifiers() -> list[str]:
    """Names of the registered verifiers declared differentiable (their score has a gradient
    w.r.t. the images), sorted."""
    return sorted(n for n in available_verifiers() if verifier_entry(n).differentiable)


def not_differentiable_message(name: str) -> str:
    """The one line said when a gradient is asked of a verifier without one."""
    return (f"verifier {name!r} is not differentiable, so its gradient cannot steer sampling; use one of "
            f"{', '.join(differentiable_verifiers())} (or an ensemble of them with mode=zscore, or a "
            f"FunctionVerifier(..., differentiable=True))")


def check_differentiable(name: str) -> None:
    """TTSInputError (one line) when registered verifier `name` is declared not differentiable
    (torch-free; an ensemble, declared None, is checked when built)."""
    if verifier_entry(name).differentiable is False:
        raise TTSInputError(not_differentiable_message(name))


def verifier_factory(name: str) -> VerifierFactory:
    """The registered factory of verifier `name`, its module imported on first use."""
    return _REGISTRY.load(name)


def load_verifier(name_or_verifier: Any, **options: Any) -> "Verifier":
    """A verifier object from its registered name (options validated and the declared
    defaults filled in, then its factory); a Verifier as is; a plain callable
    `f(images, prompts) -> scores` wrapped in `FunctionVerifier`."""
    if not isinstance(name_or_verifier, str):
        if options:
            raise TTSInputError(f"verifier options {sorted(options)} apply to a registered verifier name only")
        from .base import as_verifier

        return as_verifier(name_or_verifier)
    options = verifier_entry(name_or_verifier).options(options)
    return verifier_factory(name_or_verifier)(**options)
