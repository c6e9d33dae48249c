"""The table both registries are (searchers/registry.py, verifiers/registry.py), without torch.

Name -> `Slot`: a component's declaration (an entry with `.name` and `.description`, read by
`list`, `-o` parsing and `SearchRequest.check`) and its implementation (a search function or
a verifier factory). A built-in's implementation is imported from its module the first time
it is needed; the module registers it with the same declaration object (`attach`)."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from .errors import TTSInputError


@dataclass
class Slot:
    """A registered component: its declaration, and its implementation once imported
    (`module`: where a built-in's is defined and registered, imported on first use)."""

    entry: Any
    implementation: Callable[..., Any] | None = None
    module: str | None = None


class Registry(dict):
    """Name -> Slot of one kind of component ("searcher", "verifier")."""

    def __init__(self, kind: str, builtin: Iterable[tuple[Any, str]] = (), package: str = ""):
        """builtin: (declaration, module of `package`) of each built-in, registered without
        importing the module."""
        super().__init__()
        self.kind = kind
        for entry, module in builtin:
            self[entry.name] = Slot(entry, module=f"{package}.{module}" if package else module)

    def attach(self, entry: Any, implementation: Callable[..., Any]) -> None:
        """Register `implementation` under `entry`: a built-in's, imported now, fills its slot;
        any other replaces what the name held."""
        slot = self.get(entry.name)
        if slot is not None and slot.entry is entry:
            slot.implementation = implementation
        else:
            self[entry.name] = Slot(entry, implementation)

    def slot(self, name: str) -> Slot:
        if not isinstance(name, str) or name not in self:
            raise TTSInputError(f"unknown {self.kind} {name!r}; available: {', '.join(sorted(self)) or 'none'}")
        return self[name]

    def load(self, name: str) -> Callable[..., Any]:
        """The implementation of `name`, its module imported on first use."""
        slot = self.slot(name)
        if slot.implementation is None:
            importlib.import_module(slot.module)  # its register_* decorator fills the slot
            if slot.implementation is None:
                raise RuntimeError(f"{slot.module} does not register {self.kind} {name!r}")
        return slot.implementation

    def descriptions(self) -> dict[str, str]:
        """Name -> one-line description, sorted by name."""
        return {k: s.entry.description for k, s in sorted(self.items())}
