"""A verifier's declaration (torch-free): its name, description and options (params.py
`Param`s). Each built-in verifier's lives beside it, in `<name>_spec.py`; the registry
(registry.py) holds them all."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..params import Param, ParamSpec

#: extra(key, value): True for an option outside the declaration that goes to the factory
#: unchecked (the factory validates it; e.g. an ensemble's per-member `clip.model` options)
ExtraOption = Callable[[str, Any], bool]


@dataclass(frozen=True)
class VerifierEntry:
    """A verifier's declaration: everything the registry knows about it besides its factory."""

    name: str
    description: str
    params: ParamSpec
    extra: ExtraOption | None = field(default=None, compare=False)
    #: True: its score is differentiable w.r.t. the images (reward guidance, noise
    #: optimisation); None: it depends on the instance (an ensemble: on its members and mode)
    differentiable: bool | None = False

    @classmethod
    def declare(cls, name: str, description: str = "", *, params: Sequence[Param] = (),
                extra: ExtraOption | None = None, differentiable: bool | None = False) -> "VerifierEntry":
        return cls(name, description, ParamSpec(f"verifier {name!r}", list(params)), extra, differentiable)

    def options(self, given: dict[str, Any]) -> dict[str, Any]:
        """What the factory is called with: `given`, validated, and the declared defaults of
        the options left out (those derived by the factory, default None, stay out), in
        declaration order, plus the factory-checked extras given. Paths may be os.PathLike
        (made str); Python objects the CLI cannot express (a torch.dtype, a torch.device, a
        mapping, a Verifier) go to the factory, which checks them."""
        checked: dict[str, Any] = {}
        extras: dict[str, Any] = {}
        for key, value in given.items():
            if isinstance(value, os.PathLike):
                value = os.fspath(value)
            if self.extra is not None and self.extra(key, value):
                extras[key] = value
            elif _python_object(value) and key in self.params.names():
                checked[key] = value
            else:
                checked[key] = self.params.get(key).validate(value, self.params.owner)
        filled = {p.name: checked.get(p.name, p.default) for p in self.params
                  if p.name in checked or p.default is not None}
        return {**filled, **extras}


def _python_object(value: Any) -> bool:
    return not isinstance(value, (str, bool, int, float, list, tuple, type(None)))
