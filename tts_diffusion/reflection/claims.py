"""Atomic claims of a plain-English prompt: objects, counts, colours, relations.

A decomposed critic (critics.py) checks a prompt one claim at a time, the way GenEval
(Ghosh et al., 2023) and Davidsonian scene graphs check images: "a red car to the left of
two dogs" becomes

    object    "a car"                          nouns (car,)
    colour    "a red car"                      nouns (car,)
    object    "a dog"                          nouns (dog,)
    count     "two dogs"                       nouns (dog,)
    relation  "a red car to the left of two dogs"  nouns (car, dog)

Each claim carries a `probe` caption (the whole prompt) and `contrasts`: the prompt with
that claim made false (the car in other colours, the dogs in other numbers, the relation
flipped or turned by 90 degrees, the objects swapped, the object replaced or left out). A caption scorer (CLIP)
judges the claim by the probe's margin over its best contrast (critics.py): in context,
like the hard negatives CLIP-style models are trained and evaluated with. The parser covers prompts built from these parts:

    [a photo of | an image of | a picture of | ...] phrase ((and | ,) phrase | relation phrase)*
    phrase   := [a | an | the | number] colour* word* noun
    relation := left of | to the left of | right of | to the right of | above | below |
                on top of | under | beneath | over | next to | beside | behind | in front of

which includes every prompt of shapes grammar v1 (shapes/grammar.py): for those, object
contrasts are the other shapes of the world, colours the other palette colours, counts one
to four, so every probe and contrast is again a prompt of the grammar (tested). Prompts of
the categories grammar v2 adds (sizes, three objects, between, inside, five or six) are
read by the grammar itself (`_shapes_v2`): their probe is the canonical prompt and every
contrast another prompt of the grammar (a shape, colour or count changed, the sizes
swapped, the middle object swapped with one around it, the container put inside).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from ..errors import TTSInputError

#: colour words recognised as attributes (the shapes palette is a subset)
COLOR_WORDS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange", "pink", "brown", "black",
                                "white", "gray", "grey")
NUMBER_WORDS: dict[str, int] = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
                                "eight": 8, "nine": 9, "ten": 10}
_NUMBER_NAMES = {v: k for k, v in NUMBER_WORDS.items() if k != "grey"}
#: relation phrase (longest first when matching) -> (canonical relation, its converse)
RELATIONS: dict[str, tuple[str, str]] = {
    "to the left of": ("left of", "right of"), "on the left of": ("left of", "right of"),
    "left of": ("left of", "right of"),
    "to the right of": ("right of", "left of"), "on the right of": ("right of", "left of"),
    "right of": ("right of", "left of"),
    "on top of": ("above", "below"), "above": ("above", "below"), "over": ("above", "below"),
    "below": ("below", "above"), "under": ("below", "above"), "beneath": ("below", "above"),
    "underneath": ("below", "above"),
    "in front of": ("in front of", "behind"), "behind": ("behind", "in front of"),
    "next to": ("next to", "next to"), "beside": ("next to", "next to"),
}
#: relations that exclude each other on the other axis (dominant-axis reading, as the oracle's)
PERPENDICULAR: dict[str, list[str]] = {"left of": ["above", "below"], "right of": ["above", "below"],
                                       "above": ["left of", "right of"], "below": ["left of", "right of"]}
_LEADS = ("a photo of", "a picture of", "an image of", "a photograph of", "a drawing of", "a painting of",
          "a rendering of", "photo of", "image of", "picture of")
_IRREGULAR = {"people": "person", "men": "man", "women": "woman", "children": "child", "mice": "mouse",
              "geese": "goose", "feet": "foot", "teeth": "tooth", "sheep": "sheep", "fish": "fish",
              "deer": "deer", "buses": "bus", "glasses": "glass", "boxes": "box", "knives": "knife",
              "leaves": "leaf", "wolves": "wolf"}


_OWN = object()


@dataclass(frozen=True)
class ObjectPhrase:
    """One noun phrase: `noun` (singular), `count` (1 for "a car"; None for a number left
    open, "dogs" / "some dogs"), colours, other words; `numbered`: the count was written
    as a number ("one star", "two dogs"), which makes it a claim of its own."""

    noun: str
    count: int | None = 1
    colors: tuple[str, ...] = ()
    modifiers: tuple[str, ...] = ()
    numbered: bool = False

    def text(self, count=_OWN, colors: tuple[str, ...] | None = None) -> str:
        """'a red car', 'two dogs', 'dogs' (count: override this phrase's own count)."""
        n = self.count if count is _OWN else count
        head = " ".join([*(self.colors if colors is None else colors), *self.modifiers])
        if n is None:
            return f"{head} {plural(self.noun)}".strip()
        if n == 1:
            words = f"{head} {self.noun}".strip()
            return f"one {words}" if self.numbered else f"{article(words)} {words}"
        return f"{_NUMBER_NAMES.get(n, str(n))} {head} {plural(self.noun)}".replace("  ", " ")


@dataclass(frozen=True)
class Claim:
    """One atomic statement about the image.

    kind: "object" | "count" | "color" | "relation"; text: the statement in words;
    probe: a caption that says it; contrasts: captions that say something incompatible;
    nouns: the objects it is about (their nouns, in prompt order)."""

    kind: str
    text: str
    probe: str
    contrasts: tuple[str, ...] = ()
    nouns: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class ParsedPrompt:
    """A prompt as objects and relations; `relations` hold (index a, relation, index b)."""

    prompt: str
    lead: str
    objects: tuple[ObjectPhrase, ...]
    relations: tuple[tuple[int, str, int], ...] = ()
    claims: tuple[Claim, ...] = field(default=(), compare=False)


def article(words: str) -> str:
    return "an" if words[:1] in "aeiou" else "a"


def plural(noun: str) -> str:
    inv = {v: k for k, v in _IRREGULAR.items()}
    if noun in inv:
        return inv[noun]
    if re.search(r"(s|x|z|ch|sh)$", noun):
        return noun + "es"
    if re.search(r"[^aeiou]y$", noun):
        return noun[:-1] + "ies"
    return noun + "s"


def singular(noun: str) -> str:
    if noun in _IRREGULAR:
        return _IRREGULAR[noun]
    if noun.endswith("ies") and len(noun) > 4:
        return noun[:-3] + "y"
    if re.search(r"(ses|xes|zes|ches|shes)$", noun):
        return noun[:-2]
    if noun.endswith("s") and not noun.endswith("ss") and len(noun) > 2:
        return noun[:-1]
    return noun


def _normalize(prompt: str) -> str:
    text = prompt.lower().strip().rstrip(".!")
    text = re.sub(r"[,;]", " , ", text)
    return " ".join(text.split())


def _phrase(words: list[str], prompt: str) -> ObjectPhrase:
    """[a | an | the | number | some] colour* word* noun -> ObjectPhrase."""
    if not words:
        raise TTSInputError(f"cannot split prompt {prompt!r} into objects: an empty object phrase"
                            " (write objects like 'a red car', 'two dogs')")
    det, count, numbered = None, None, False
    if words[0] in ("a", "an", "the", "some", "several", "many") or words[0] in NUMBER_WORDS or words[0].isdigit():
        det, words = words[0], words[1:]
    if not words:
        raise TTSInputError(f"cannot split prompt {prompt!r} into objects: {det!r} without a noun")
    word = words[-1]
    looks_plural = singular(word) != word
    if det in ("a", "an"):
        count = 1
    elif det is not None and (det in NUMBER_WORDS or det.isdigit()):
        count, numbered = NUMBER_WORDS.get(det) or int(det), True
    elif det in ("some", "several", "many"):
        count = None
    else:  # "the" or no determiner: the noun's form decides
        count = None if looks_plural else 1
    noun = singular(word) if (count is None or count > 1) else word
    colors = tuple(w for w in words[:-1] if w in COLOR_WORDS)
    mods = tuple(w for w in words[:-1] if w not in COLOR_WORDS)
    return ObjectPhrase(noun, count, colors, mods, numbered)


def parse_claims(prompt: str) -> ParsedPrompt:
    """Split a plain-English prompt into objects, relations and atomic claims.

    Raises TTSInputError (one line) when the prompt names no object."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise TTSInputError("the prompt is empty: pass a non-empty text prompt")
    v2 = _shapes_v2(prompt)
    if v2 is not None:
        return v2
    text = _normalize(prompt)
    lead = ""
    for cand in _LEADS:
        if text.startswith(cand + " "):
            lead, text = cand, text[len(cand) + 1:]
            break
    words = text.split()
    objects: list[ObjectPhrase] = []
    relations: list[tuple[int, str, int]] = []
    current: list[str] = []
    pending_rel: str | None = None
    rel_keys = sorted(RELATIONS, key=lambda r: -len(r.split()))
    i = 0

    def close() -> None:
        nonlocal pending_rel
        objects.append(_phrase(current[:], prompt))
        current.clear()
        if pending_rel is not None:
            relations.append((len(objects) - 2, pending_rel, len(objects) - 1))
            pending_rel = None

    while i < len(words):
        w = words[i]
        if w in (",", "and", "with") and current:
            close()
            i += 1
            continue
        if w in (",", "and", "with"):
            i += 1
            continue
        rel = next((r for r in rel_keys if words[i:i + len(r.split())] == r.split()), None)
        if rel is not None and current:
            close()
            pending_rel = RELATIONS[rel][0]
            i += len(rel.split())
            continue
        current.append(w)
        i += 1
    if current:
        close()
    if pending_rel is not None or not objects:
        raise TTSInputError(f"cannot split prompt {prompt!r} into objects and relations;"
                            " write it like 'a red car to the left of two dogs'")
    parsed = ParsedPrompt(prompt, lead, tuple(objects), tuple(relations))
    return ParsedPrompt(parsed.prompt, lead, parsed.objects, parsed.relations, tuple(_claims(parsed)))


def _caption(parsed: ParsedPrompt, body: str) -> str:
    return f"{parsed.lead or 'a photo of'} {body}"


def render(parsed: ParsedPrompt, objects: list[ObjectPhrase] | tuple[ObjectPhrase, ...] | None = None,
           relations: tuple[tuple[int, str, int], ...] | None = None) -> str:
    """The prompt's structure as a caption, with objects / relations replaced: objects in
    order, joined by their relation where one links neighbours, else by "and"."""
    objs = list(parsed.objects if objects is None else objects)
    rels = {(a, b): r for a, r, b in (parsed.relations if relations is None else relations)}
    body = objs[0].text()
    for i in range(1, len(objs)):
        body += f" {rels.get((i - 1, i), 'and')} {objs[i].text()}"
    return _caption(parsed, body)


def _shape_world(parsed: ParsedPrompt) -> bool:
    from ..shapes.grammar import SHAPES

    return all(o.noun in SHAPES for o in parsed.objects)


def _claims(parsed: ParsedPrompt) -> list[Claim]:
    """Object, colour, count and relation claims. Each claim's probe is the whole prompt
    (`render`) and its contrasts are the prompt with that one claim made false, so a
    caption scorer compares them in context, as with hard negatives:

        colour    the object in the other colours of the palette
        count     the object in the other counts (1 .. 4, or up to count + 1)
        relation  the two objects swapped, the converse relation, the perpendicular ones
        object    the object replaced by the world's other objects (shapes world), else
                  left out (a lone object: the bare lead, "a photo")"""
    from ..shapes.grammar import COLORS as SHAPE_COLORS, MAX_COUNT, SHAPES

    shapes = _shape_world(parsed)
    palette = tuple(SHAPE_COLORS) if shapes else tuple(c for c in COLOR_WORDS if c != "grey")
    named = {o.noun for o in parsed.objects}
    objs = list(parsed.objects)
    probe = render(parsed)

    def swap(i: int, new: ObjectPhrase) -> str:
        return render(parsed, objs[:i] + [new] + objs[i + 1:])

    out: list[Claim] = []
    for i, o in enumerate(objs):
        if shapes:
            contrasts = tuple(swap(i, replace(o, noun=s)) for s in SHAPES if s not in named)
        elif len(objs) > 1:
            rest = tuple((a - (a > i), r, b - (b > i)) for a, r, b in parsed.relations if i not in (a, b))
            contrasts = (render(parsed, objs[:i] + objs[i + 1:], rest),)
        else:
            contrasts = (parsed.lead or "a photo",)
        out.append(Claim("object", ObjectPhrase(o.noun).text(), probe, contrasts, (o.noun,)))
        for c in o.colors:
            alts = tuple(swap(i, replace(o, colors=tuple(a if x == c else x for x in o.colors)))
                         for a in palette if a not in o.colors)
            out.append(Claim("color", f"the {o.noun} is {c}", probe, alts, (o.noun,)))
        if o.numbered and o.count is not None:
            top = MAX_COUNT if shapes else max(MAX_COUNT, o.count + 1)
            alts = tuple(swap(i, replace(o, count=n)) for n in range(1, top + 1) if n != o.count)
            out.append(Claim("count", f"exactly {o.text()}", probe, alts, (o.noun,)))
    for a, rel, b in parsed.relations:
        converse = next(v[1] for v in RELATIONS.values() if v[0] == rel)
        swapped = objs[:]
        swapped[a], swapped[b] = objs[b], objs[a]
        contrasts = [render(parsed, swapped)] if rel != "next to" else []
        others = [converse] + PERPENDICULAR.get(rel, [])
        for alt in (o for o in others if o != rel):
            contrasts.append(render(parsed, objs, tuple((x, alt if (x, y) == (a, b) else r, y)
                                                        for x, r, y in parsed.relations)))
        out.append(Claim("relation", f"the {objs[a].noun} is {rel} the {objs[b].noun}", probe,
                         tuple(dict.fromkeys(contrasts)), (objs[a].noun, objs[b].noun)))
    return out


def _shapes_v2(prompt: str) -> ParsedPrompt | None:
    """The claims of a prompt of a category shapes grammar v2 adds, from its parsed meaning
    (module doc); None for any other prompt."""
    from ..shapes.grammar import BETWEEN, COLORS as SHAPE_COLORS, INSIDE, MAX_COUNT_MANY, SHAPES, V2_CATEGORIES
    from ..shapes.grammar import ObjectSpec, Spec, format_spec, parse_canonical
    from ..shapes.phrasing import parse_prompt

    try:
        spec = parse_prompt(prompt)
    except TTSInputError:
        return None
    if spec.category not in V2_CATEGORIES:
        return None
    objs = list(spec.objects)
    named = {o.shape for o in objs}

    def variant(new_objs, relation=spec.relation) -> str | None:
        text = format_spec(Spec("", spec.category, tuple(new_objs), relation))
        try:
            other = parse_canonical(text)
        except TTSInputError:
            return None
        return text if other != spec else None

    def contrasts(options) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t for t in options if t is not None))

    def name(o: ObjectSpec) -> str:
        return f"{o.color} {o.shape}" if o.color else o.shape

    def with_obj(i: int, o: ObjectSpec) -> list[ObjectSpec]:
        new = objs[:i] + [o] + objs[i + 1:]
        if spec.relation == BETWEEN and i > 0 and objs[1] == objs[2]:
            new[1] = new[2] = o  # "two Bs" change together
        return new

    claims: list[Claim] = []
    seen: set[ObjectSpec] = set()
    for i, o in enumerate(objs):
        if o in seen:
            continue
        seen.add(o)
        alts = [variant(with_obj(i, ObjectSpec(s, o.color, o.count, o.size))) for s in SHAPES if s not in named]
        claims.append(Claim("object", f"a {o.shape}", spec.prompt, contrasts(alts), (o.shape,)))
        if o.color:
            alts = [variant(with_obj(i, ObjectSpec(o.shape, c, o.count, o.size))) for c in SHAPE_COLORS if c != o.color]
            claims.append(Claim("color", f"the {o.shape} is {o.color}", spec.prompt, contrasts(alts), (o.shape,)))
        if spec.category == "counting_many":
            alts = [variant([ObjectSpec(o.shape, o.color, n)]) for n in range(1, MAX_COUNT_MANY + 1) if n != o.count]
            claims.append(Claim("count", f"exactly {spec.prompt.split(' of ', 1)[1]}", spec.prompt, contrasts(alts), (o.shape,)))
    if spec.category == "size_attr":
        big = objs[0] if objs[0].size == "big" else objs[1]
        small = objs[1] if big is objs[0] else objs[0]
        alike = ObjectSpec(big.shape, big.color) == ObjectSpec(small.shape, small.color)  # swapped sizes read the same
        swapped = [ObjectSpec(o.shape, o.color, 1, "small" if o.size == "big" else "big") for o in objs]
        claims.append(Claim("relation", f"the {name(big)} is bigger than the {name(small)}", spec.prompt,
                            () if alike else contrasts([variant(swapped)]), (big.shape, small.shape)))
    elif spec.relation == BETWEEN:
        mid, b, c = objs
        alts = [variant([b, mid, mid] if b == c else [b, mid, c]), variant([c, b, mid])]
        ends = f"the two {name(b)}s" if b == c else f"the {name(b)} and the {name(c)}"
        claims.append(Claim("relation", f"the {name(mid)} is between {ends}", spec.prompt, contrasts(alts),
                            (mid.shape, b.shape, c.shape)))
    elif spec.relation == INSIDE:
        inner, outer = objs
        claims.append(Claim("relation", f"the {name(inner)} is inside the {name(outer)}", spec.prompt,
                            contrasts([variant([outer, inner])]), (inner.shape, outer.shape)))
    phrases = tuple(ObjectPhrase(o.shape, o.count, (o.color,) if o.color else (), (o.size,) if o.size else (),
                                 spec.category == "counting_many") for o in objs)
    lead = "a photo of"
    return ParsedPrompt(prompt, lead, phrases, (), tuple(c for c in claims if c.contrasts))
