"""Subject words of a prompt and their text-token spans, offline (no NLTK / spaCy).

Alfie (Quattrini et al. 2024) takes the prompt's nouns (NLTK's tagger) minus a list of
generic words (image, photo, illustration, ...) and reads the cross-attention columns of
their T5 sub-tokens. Here the rule is built in:

- shapes world: the grammar's nouns (`shapes.grammar.SHAPES` and their plurals) when the
  prompt has any;
- otherwise: the prompt's words minus a stop-word list, Alfie's generic nouns, and common
  non-noun modifiers (colours, numbers, sizes, styles); what is left is the subject;
- `subject=` overrides the rule ("cat" or "cat, hat": comma- or space-separated words).

Words map to token positions with the pipeline's own tokenizer through character offsets
(fast tokenizers) or, failing that, by matching each word's own tokens as a sub-sequence.
"""
from __future__ import annotations

import re
from typing import Any, Sequence

from ..errors import TTSInputError
from ..shapes.grammar import COLORS, NUMBERS, PLURALS, SHAPES

#: function words
STOP_WORDS = frozenset("""
a an the of on in at to for from with without by and or but nor as into onto over under above below
left right near next behind front beside between through its it this that these those is are be
being been has have having very some any each every no not one two three four five six seven eight
nine ten many several few more most other another their his her our your my
""".split())
#: Alfie's generic nouns (alfie/generate_prompt.py `nouns_to_exclude`, abridged) and similar
GENERIC_WORDS = frozenset("""
image images photo photos photograph picture pictures illustration illustrations drawing painting
render rendering logo icon icons poster scene view background backgrounds foreground png jpg jpeg
www com style art artwork design vector clipart clip sticker close closeup shot portrait detail
details texture pattern graphic graphics wallpaper template mockup stock high quality resolution
white black isolated transparent cartoon realistic digital 3d 2d hd 4k 8k
""".split())
#: modifiers that are not subjects (colours, sizes, looks)
MODIFIERS = frozenset(set(COLORS) | set(NUMBERS) | set("""
big small large tiny huge little tall short long old new young cute beautiful pretty
bright dark light colorful colourful red green blue yellow purple orange pink brown gray grey
golden silver wooden shiny fluffy happy sad round square-shaped
""".split()))

_WORD = re.compile(r"[a-z0-9][a-z0-9'-]*")


def _shape_nouns() -> frozenset[str]:
    return frozenset(SHAPES) | frozenset(PLURALS.values())


def subject_words(prompt: str, subject: str | Sequence[str] | None = None) -> list[str]:
    """The words whose cross-attention maps make the matte (see the module docstring).
    Raises TTSInputError when none is found."""
    if subject is not None:
        words = [subject] if isinstance(subject, str) else list(subject)
        words = [w.strip().lower() for s in words for w in re.split(r"[,\s]+", s) if w.strip()]
        if not words:
            raise TTSInputError("subject is empty: pass the word(s) naming the subject, e.g. subject=\"cat\"")
        missing = [w for w in words if w not in _WORD.findall(prompt.lower())]
        if missing:
            raise TTSInputError(f"subject word(s) {', '.join(map(repr, missing))} are not in the prompt {prompt!r}")
        return words
    words = _WORD.findall(prompt.lower())
    shapes = [w for w in words if w in _shape_nouns()]
    if shapes:
        return list(dict.fromkeys(shapes))
    rest = [w for w in words if w not in STOP_WORDS and w not in GENERIC_WORDS and w not in MODIFIERS
            and not w.isdigit()]
    if not rest:
        raise TTSInputError(
            f"no subject found in the prompt {prompt!r} (only function, generic or colour words):"
            " name the subject in the prompt or pass subject=\"WORD\" (--subject WORD)")
    return list(dict.fromkeys(rest))


def token_spans(tokenizer: Any, text: str, words: Sequence[str], max_length: int | None = None) -> list[list[int]]:
    """Token positions of each word of `words` in `tokenizer(text)` (the positions the text
    encoder's sequence has; tokens past `max_length` are dropped). Every occurrence of a
    word counts. Raises TTSInputError for a word with no token inside the sequence."""
    enc = None
    try:
        enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
    except (NotImplementedError, TypeError, ValueError):
        enc = None
    spans: list[list[int]] = []
    limit = max_length if max_length is not None else 10**9
    for word in words:
        pos: list[int] = []
        if enc is not None and "offset_mapping" in enc:
            for m in re.finditer(rf"(?<![a-z0-9]){re.escape(word)}(?![a-z0-9])", text):
                a, b = m.span()
                pos += [j for j, (s, e) in enumerate(enc["offset_mapping"]) if e > s and s < b and e > a]
        else:
            ids = tokenizer(text, add_special_tokens=True)["input_ids"]
            sub = tokenizer(word, add_special_tokens=False)["input_ids"]
            for j in range(len(ids) - len(sub) + 1):
                if sub and ids[j : j + len(sub)] == sub:
                    pos += list(range(j, j + len(sub)))
        pos = sorted({j for j in pos if j < limit})
        if not pos:
            raise TTSInputError(
                f"subject word {word!r} has no token in the text encoder's sequence"
                f"{f' (first {max_length} tokens)' if max_length else ''}: shorten the prompt or pass another subject=")
        spans.append(pos)
    return spans


def preprocess_text(prompt: str) -> str:
    """The text PixArt's `encode_prompt` tokenizes with clean_caption=False (lower, strip)."""
    return prompt.lower().strip()
