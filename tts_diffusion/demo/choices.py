"""A dropdown that takes only its own choices and does not repeat anything else.

Gradio's `Dropdown` refuses a value outside its choices, but its message repeats the value
("Value: /etc is not in the list of choices"), so a client of the API that sends a path
gets the path back. `FixedChoice` refuses with the widget's label and nothing the client
sent. It is a gradio template of `Dropdown` (`is_template`): the page draws it as one.
(Gradio writes a type stub, choices.pyi, beside any component subclass it defines; the
repository ignores it.)
"""
from __future__ import annotations

from typing import Any

import gradio as gr


class FixedChoice(gr.Dropdown):
    """`gr.Dropdown` (no custom values) whose refusal names the widget, not the value."""

    is_template = True

    def preprocess(self, payload: Any) -> Any:
        allowed = [value for _, value in self.choices]
        values = payload if isinstance(payload, list) else [payload]
        if payload is not None and (any(v not in allowed for v in values) or (isinstance(payload, list)
                                                                             and not self.multiselect)):
            raise gr.Error(f"{self.label or 'a list'}: not one of its choices; pick one from the list")
        return super().preprocess(payload)
