"""English noun phrases in instructions: one analysis of a phrase, and templates filled in agreeing with it.

A phrase is analysed once (its determiner, its head noun and whether that is plural, via ``inflect``) so
that a template's placeholders come out grammatical for "two dogs", "his hat", "a dog", "man's shirt",
"trees on the hill" and "grass" alike. The placeholders and the rules are documented with the paraphrase
files (:mod:`ieiw.builders.instructions`); backends use :func:`render` for their own prompts (CLIP's "a
photo of {a_phrase}") and :func:`label_phrase` for class names.
"""

from __future__ import annotations

import functools
import re
import string
import sys
import threading
from dataclasses import dataclass
from typing import Any

ARTICLES = {"a", "an", "the"}
POSSESSIVE_DETERMINERS = {"my", "your", "his", "her", "its", "our", "their", "whose"}
SINGULAR_DETERMINERS = {"this", "that", "each", "every", "another", "either", "neither", "one"}
PLURAL_DETERMINERS = {"these", "those", "both", "several", "many", "few", "various", "numerous", "multiple"}
# Determiners whose number follows the noun ("some grass" / "some people").
OPEN_DETERMINERS = {"some", "any", "all", "most", "no", "much", "enough", "more", "less", "fewer", "half",
                    "such", "what", "which"}
NUMBERS = {
    "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
    "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
    "hundred": 100, "dozens": 24, "hundreds": 200,
}
# "a few people", "a lot of cars", "a couple of dogs": a quantifier, kept as written.
ARTICLE_QUANTIFIERS = {"few", "lot", "couple", "little", "bit", "number", "handful"}
QUANTITY_NOUNS = {"lots", "plenty", "couple"}  # "lots of people" (no article)
PREPOSITIONS = {
    "on", "in", "at", "of", "with", "near", "behind", "under", "underneath", "above", "below", "beside",
    "besides", "beneath", "next", "by", "from", "over", "to", "into", "onto", "inside", "outside",
    "against", "along", "across", "around", "between", "among", "for", "like", "through", "past",
    "toward", "towards", "up", "down", "off", "atop", "within", "without", "upon", "via", "beyond",
    "during", "after", "before", "alongside", "amid", "opposite", "than", "out", "about", "throughout",
    "except", "containing",
}
CLAUSE_WORDS = {"that", "which", "who", "whom", "whose", "where", "when", "while", "being", "is", "are",
                "was", "were", "has", "have", "had", "having", "can", "will", "to", "as", "if", "so", "but",
                "or"}
# Nouns ending in -ing (a participle after the head ends the head chunk; these do not).
ING_NOUNS = {
    "building", "ceiling", "railing", "clothing", "painting", "awning", "ring", "earring", "wing", "string",
    "thing", "king", "spring", "evening", "morning", "sibling", "siding", "lighting", "icing", "topping",
    "frosting", "stuffing", "bedding", "pudding", "sling", "swing", "wedding", "opening", "drawing",
    "marking", "markings", "writing", "lettering", "sing", "fencing", "netting", "wiring", "padding",
    "landing", "parking", "crossing", "dressing", "filling", "seasoning", "housing", "casing", "molding",
    "moulding", "trimming", "ping", "ceiling", "clearing", "coating", "covering", "plating", "tubing",
    "piping", "stitching", "edging", "flooring", "roofing", "decking", "shelving", "carving", "sculpting",
    "dumpling", "seedling", "sapling", "duckling", "herring", "whiting", "darling", "shilling", "pudding",
    "stocking", "stockings", "legging", "bearing", "fitting", "mooring", "awning", "sibling", "thong",
}
# Gerunds that usually modify a following noun ("bowling ball", "dining table"), unlike a participle
# after the head ("people walking", "man wearing a hat").
GERUND_MODIFIERS = {
    "dining", "swimming", "bowling", "cutting", "ironing", "sailing", "shopping", "walking", "sleeping",
    "fishing", "living", "washing", "frying", "running", "baking", "cooking", "changing", "waiting",
    "reading", "drinking", "boxing", "skating", "skiing", "surfing", "hiking", "riding", "training",
    "sewing", "serving", "mixing", "rocking", "diving", "steering", "sporting", "writing",
    "drawing", "chopping", "measuring", "climbing", "racing", "hunting", "camping", "landing", "hanging",
    "flying", "passing", "moving", "spinning", "rolling", "folding", "sliding", "vending", "parking",
}
# Words before "and" that make it join adjectives ("black and white cat"), not nouns ("cup and saucer").
ADJECTIVES_BEFORE_AND = {
    "black", "white", "red", "green", "blue", "yellow", "orange", "purple", "pink", "brown", "grey", "gray",
    "silver", "gold", "golden", "tan", "beige", "dark", "light", "bright", "pale", "big", "small", "large",
    "little", "tall", "short", "long", "old", "new", "young", "thick", "thin", "wide", "narrow", "clean",
    "dirty", "wet", "dry", "hot", "cold", "round", "square", "striped", "plaid", "checkered", "spotted",
}
# Grammatically plural nouns whose singular_noun() is themselves or missing.
PLURALIA = {
    "people", "police", "cattle", "scissors", "pants", "trousers", "jeans", "shorts", "glasses",
    "sunglasses", "eyeglasses", "goggles", "binoculars", "tongs", "pliers", "clothes", "headphones",
    "earphones", "earbuds", "suspenders", "overalls", "pajamas", "pyjamas", "leggings", "tights",
    "bleachers", "remains", "belongings", "goods", "outskirts", "surroundings", "contents", "folks",
    "livestock", "poultry", "men", "women", "children", "feet", "teeth", "geese", "mice", "oxen", "dice",
    "fries", "briefs", "trunks", "slacks", "sweatpants", "bangs", "whiskers", "stairs", "steps",
    "skis", "taxis", "kiwis", "bikinis", "martinis", "safaris",  # -is plurals the "-is" rule would miss
}
# Singular nouns ending in -s that inflect would singularise ("bus" -> "bu").
SINGULAR_S = {
    "bus", "gas", "canvas", "atlas", "bias", "alias", "pancreas", "lens", "news", "series", "species",
    "chassis", "mathematics", "physics", "athletics", "gymnastics", "billiards", "chaos", "cosmos",
    "asbestos", "ethos", "measles", "mumps", "tennis", "corps", "debris", "hummus", "moss", "bass",
    "dais", "trellis", "iris", "axis", "always", "this", "its", "his", "yes", "us", "plus", "gps", "ps",
}
# Mass nouns: singular agreement, "some grass" rather than "a grass" as the indefinite form.
MASS = {
    "grass", "sky", "water", "snow", "sand", "hair", "dirt", "mud", "ice", "fur", "smoke", "fog", "mist",
    "foliage", "furniture", "luggage", "baggage", "food", "bread", "rice", "pasta", "sauce", "cheese",
    "meat", "broccoli", "lettuce", "spinach", "wood", "metal", "concrete", "asphalt", "gravel", "pavement",
    "sunlight", "sunshine", "shade", "graffiti", "lettering", "writing", "text", "clothing", "hay", "straw",
    "foam", "steam", "rain", "soil", "moss", "ivy", "vegetation", "greenery", "seaweed", "frosting",
    "icing", "cream", "butter", "sugar", "salt", "milk", "coffee", "tea", "wine", "beer", "juice", "soup",
    "brush", "shrubbery", "traffic", "equipment", "machinery", "jewelry", "jewellery", "fabric", "cloth",
    "plastic", "dust", "rust", "paint", "gear", "garbage", "trash", "rubbish", "debris", "lumber", "mulch",
    "cement", "wallpaper", "wiring", "netting", "fencing", "lighting", "bedding", "siding", "scenery",
    "ketchup", "mustard", "mayonnaise", "chocolate", "cereal", "oatmeal", "toast", "bacon", "ham", "beef",
    "pork", "lava", "oil", "air", "fire", "wallpaper", "carpeting", "flooring", "roofing", "tubing",
    "stubble", "clutter", "produce", "pizza sauce", "syrup", "honey", "jam", "yogurt", "rubble", "ivy",
    "sushi", "corn", "popcorn", "spaghetti",
}
PUNCTUATION = ".,;:!?\"()[]"
# One-word phrases that take no article ("Remove everything").
STANDALONE = (POSSESSIVE_DETERMINERS | SINGULAR_DETERMINERS | PLURAL_DETERMINERS | OPEN_DETERMINERS
              | {"it", "them", "everything", "something", "someone", "everyone", "nothing", "others", "both",
                 "all", "mine", "yours", "ours", "theirs", "hers"})


_INFLECT_IMPORT = threading.Lock()


@functools.lru_cache(maxsize=1)
def _engine():
    """inflect's engine, imported with typeguard's ``@typechecked`` as the no-op it is under ``python -O``.

    inflect decorates its engine with ``@typechecked``, which at import parses and recompiles every
    method (1.2-1.7 s in every process that makes instructions: each Dask worker, each test process) and
    type-checks every call after that (3x the cost of ``singular_noun`` and ``a``). ieiw passes it
    non-empty ``str`` words only. Measured on this machine: import 1.67 s -> 0.01 s, 7,600 calls 0.22 s
    -> 0.07 s. The decorator is swapped only while inflect's module body runs, under a lock."""
    with _INFLECT_IMPORT:
        if "inflect" in sys.modules:
            import inflect
        else:
            import typeguard

            checked = typeguard.typechecked
            typeguard.typechecked = _unchecked
            try:
                import inflect
            finally:
                typeguard.typechecked = checked
    return inflect.engine()


def _unchecked(target: Any = None, **_options: Any) -> Any:
    """typeguard's ``typechecked`` as ``python -O`` makes it: the target unchanged, bare or with options."""
    return target if target is not None else (lambda decorated: decorated)


def _word(token: str) -> str:
    return token.lower().strip(PUNCTUATION)


def _possessor(token: str) -> str | None:
    """``"man's"`` -> ``"man"``, ``"dogs'"`` -> ``"dogs"``; ``None`` for a word that is no possessive."""
    word = _word(token).replace("\u2019", "'")
    if word.endswith("'s") and len(word) > 2:
        return word[:-2]
    if word.endswith("s'") and len(word) > 2:
        return word[:-1]
    return None


@functools.lru_cache(maxsize=65536)
def is_plural_noun(token: str) -> bool:
    """Whether ``token`` is a plural noun: ``inflect.singular_noun`` plus the exceptions it misses
    (pluralia tantum such as "jeans", "-us"/"-is" singulars such as "bus", "iris", mass nouns)."""
    word = _word(token).replace("\u2019", "'")
    if word.endswith("s'"):  # "dogs'"
        return True
    owner = _possessor(word)
    if owner is not None:
        word = owner
    if not word or not any(c.isalpha() for c in word):
        return False
    if word in PLURALIA:
        return True
    if word in SINGULAR_S or word in MASS or word.endswith(("ss", "us", "is")):
        return False
    last = word.rsplit("-", 1)[-1]
    if last in PLURALIA:
        return True
    if last in SINGULAR_S or last in MASS:
        return False
    singular = _engine().singular_noun(word)
    return isinstance(singular, str) and singular != word


def _number(word: str) -> int | None:
    if word.isdigit():
        return int(word)
    return NUMBERS.get(word)


def head_noun(tokens: list[str]) -> tuple[int, int | None]:
    """Index of the head noun of ``tokens`` (a noun phrase without its determiner) and, when the head
    chunk joins nouns with "and" ("cup and saucer"), the index of the first conjunct (else ``None``). The head is the last word before the first
    preposition, relative clause or participle: "dog on the left" -> dog, "people walking" -> people,
    "man wearing a hat" -> man, "car parked on the street" -> car."""
    words = [_word(t) for t in tokens]
    end = len(words)
    for index, word in enumerate(words):
        if index == 0:
            continue
        following = words[index + 1] if index + 1 < len(words) else ""
        if (word in PREPOSITIONS or word in CLAUSE_WORDS) and not (word == "can" and not following):
            end = index  # "can" is a modal before a verb, the head noun at the end ("trash can")
            break
        if word.endswith("ing") and len(word) > 4 and word not in ING_NOUNS:
            modifier = word in GERUND_MODIFIERS and following and following not in PREPOSITIONS | CLAUSE_WORDS \
                and following not in ARTICLES | POSSESSIVE_DETERMINERS
            if not modifier:
                end = index
                break
        if word.endswith("ed") and len(word) > 3 and (following in PREPOSITIONS or following in ARTICLES):
            end = index
            break
    chunk = words[:end]
    first_conjunct = None
    if "and" in chunk[1:-1]:
        before = chunk.index("and", 1) - 1
        if chunk[before] not in ADJECTIVES_BEFORE_AND:
            first_conjunct = before
    head = end - 1
    while head > 0 and words[head] in ("and", ""):
        head -= 1
    return max(head, 0), first_conjunct


@dataclass(frozen=True)
class PhraseForms:
    """One phrase in the forms templates ask for (see the module docstring)."""

    phrase: str  # as written, spaces normalised
    the_phrase: str  # definite form
    a_phrase: str  # indefinite form
    plural: bool  # agreement: "are", "them"
    head: str  # the head noun the agreement follows
    mass: bool  # a mass noun: singular agreement, "some" as indefinite

    def values(self) -> dict[str, str]:
        p = self.plural
        values = {
            "phrase": self.phrase,
            "the_phrase": self.the_phrase,
            "a_phrase": self.a_phrase,
            "is": "are" if p else "is",
            "was": "were" if p else "was",
            "has": "have" if p else "has",
            "does": "do" if p else "does",
            "it": "them" if p else "it",
            "they": "they" if p else "it",
            "its": "their" if p else "its",
            "this": "these" if p else "this",
            "s": "" if p else "s",
            "es": "" if p else "es",
        }
        for pair in (("is", "are"), ("was", "were"), ("has", "have"), ("does", "do"), ("it", "them"),
                     ("its", "their"), ("this", "these")):
            values[pair[1]] = values[pair[0]]
        for key in list(values):
            if key not in ("s", "es"):
                values[key[0].upper() + key[1:]] = values[key][:1].upper() + values[key][1:]
        return values


PLACEHOLDERS = frozenset(PhraseForms("x", "x", "x", False, "x", False).values())
PHRASE_PLACEHOLDERS = {"phrase", "the_phrase", "a_phrase"}


def replace_values(source: PhraseForms, target: PhraseForms) -> dict[str, str]:
    """The values of a replace template: the source's phrase forms as ``source``/``the_source``/
    ``a_source``, the target's as ``target``/``the_target``/``a_target``, the source's agreement words
    under their own names and the target's prefixed ``target_`` (capitalised keys included)."""
    out: dict[str, str] = {}
    for key, value in source.values().items():
        out[key.replace("phrase", "source").replace("Phrase", "Source")] = value
    for key, value in target.values().items():
        if "phrase" in key.lower():
            out[key.replace("phrase", "target").replace("Phrase", "Target")] = value
        elif key[0].isupper():
            out["Target_" + key.lower()] = value
        else:
            out["target_" + key] = value
    return out


REPLACE_PLACEHOLDERS = frozenset(replace_values(PhraseForms("x", "x", "x", False, "x", False),
                                                PhraseForms("y", "y", "y", False, "y", False)))
SOURCE_PLACEHOLDERS = {"source", "the_source", "a_source"}
TARGET_PLACEHOLDERS = {"target", "the_target", "a_target"}
# Proper nouns a class label may start with; any other capitalised first word is lower-cased.
PROPER_NOUNS = {"christmas", "easter", "halloween", "santa", "ferris", "rubik's", "lego", "segway", "jacuzzi"}


@functools.lru_cache(maxsize=65536)
def label_phrase(label: str) -> str:
    """A class label as a phrase for the templates: a parenthesised qualifier dropped ("Jaguar (Animal)"
    -> "jaguar"), underscores -> spaces, and a capitalised first word lower-cased unless it is a proper
    noun or an acronym ("Human face" -> "human face"; "Christmas tree" and "CD player" stay). "&" stays:
    "kitchen & dining room table" is one table, where "and" would read as two things joined.
    Raises ``ValueError`` for a label with no words."""
    text = re.sub(r"\s*\([^)]*\)", " ", label).replace("_", " ")
    words = text.split()
    if not words:
        raise ValueError(f"empty label {label!r}")
    first = words[0]
    if first[:1].isupper() and (len(first) == 1 or first[1:] == first[1:].lower()) \
            and first.lower() not in PROPER_NOUNS:
        words[0] = first.lower()
    return " ".join(words)


@functools.lru_cache(maxsize=65536)
def phrase_forms(phrase: str, head: str | None = None) -> PhraseForms:
    """Analyse ``phrase`` (a referring phrase such as "two dogs on the grass"). ``head`` is an optional
    hint, the phrase's head noun phrase (VGPhraseCut's ``phrase_structure.name``); it is used when its
    last word is one of the phrase's words."""
    tokens = phrase.split()
    while tokens and not tokens[-1].strip(PUNCTUATION):
        tokens.pop()
    if tokens:
        tokens[-1] = tokens[-1].rstrip(".,;:!?")
    if not tokens or not any(_word(t) for t in tokens):
        raise ValueError(f"empty phrase {phrase!r}")
    text = " ".join(tokens)
    words = [_word(t) for t in tokens]
    first = words[0]
    second = words[1] if len(words) > 1 else ""
    third = words[2] if len(words) > 2 else ""
    forced: bool | None = None  # number fixed by the determiner (None: the head noun decides)
    kind = "none"
    body = 0  # index where the noun phrase after the determiner starts
    if len(tokens) == 1 and first in STANDALONE:
        kind = "keep"
    elif first in ("a", "an") and second in ARTICLE_QUANTIFIERS:
        kind, body = "keep", 2 + (third == "of")
    elif first in ("a", "an") and len(tokens) > 1:
        kind, body, forced = "indefinite", 1, False
    elif first == "the" and len(tokens) > 1:
        kind, body = "the", 1
    elif first in POSSESSIVE_DETERMINERS and len(tokens) > 1:
        kind, body = "keep", 1
    elif second == "of" and (first in SINGULAR_DETERMINERS | PLURAL_DETERMINERS | OPEN_DETERMINERS
                             or _number(first) or first in ("none", "each", "all", "both", "part")):
        # "two of the dogs", "some of the grass", "one of the cars"
        kind, body = "keep", 2
        if first in SINGULAR_DETERMINERS:
            forced = False
        elif first in PLURAL_DETERMINERS or (_number(first) or 0) >= 2:
            forced = True
        if third in ARTICLES | POSSESSIVE_DETERMINERS | {"these", "those", "this", "that"}:
            body = 3
    elif first in QUANTITY_NOUNS and second == "of":
        kind, body = "keep", 2
    elif (first in SINGULAR_DETERMINERS or _number(first) == 1) and len(tokens) > 1:
        kind, body, forced = "keep", 1, False
    elif first in PLURAL_DETERMINERS and len(tokens) > 1:
        kind, body, forced = "keep", 1, True
    elif first in OPEN_DETERMINERS and len(tokens) > 1:
        kind, body = "keep", 1
    elif (_number(first) or 0) >= 2 and len(tokens) > 1:
        kind, body, forced = "numeral", 1, True
    rest = tokens[body:] or tokens[-1:]
    rest_words = [_word(t) for t in rest]
    if kind == "the" and (_number(rest_words[0]) or 0) >= 2 and len(rest) > 1:
        kind, forced = "the-numeral", True  # "the two cats": indefinite "two cats"
    index, conjunct = head_noun(rest)
    head_word = rest_words[index]
    if head:
        hint = [_word(t) for t in head.split() if _word(t)]
        if hint and hint[-1] in rest_words and hint[-1] != "and":
            head_word = hint[-1]
            index = len(rest_words) - 1 - rest_words[::-1].index(head_word) if conjunct is None else index
            if conjunct is None:
                conjunct = head_noun(hint)[1]
    plural = forced if forced is not None else (conjunct is not None or is_plural_noun(head_word))
    mass = not plural and (head_word in MASS or (head_word.rsplit("-", 1)[-1] in MASS))
    # The indefinite article agrees with a leading possessor ("a man's shoes", "some people's faces") or
    # with the first of joined nouns ("a cup and saucer").
    owner_index = next((i for i, t in enumerate(rest[: index + 1]) if _possessor(t) is not None), None)
    if owner_index is not None:
        owner = _possessor(rest[owner_index]) or ""
        article_plural = is_plural_noun(rest[owner_index])
        article_mass = owner in MASS
    elif conjunct is not None and forced is None:
        article_plural = is_plural_noun(rest_words[conjunct])
        article_mass = not article_plural and rest_words[conjunct] in MASS
    else:
        article_plural, article_mass = plural, mass
    bare = " ".join(tokens[1:]) if kind in ("indefinite", "the", "the-numeral") else text
    if kind == "keep":
        the_phrase = text
    else:  # the, none, indefinite, numeral, a possessor ("the man's shirt")
        the_phrase = "the " + bare
    if kind in ("keep", "numeral"):
        a_phrase = text
    elif kind == "the-numeral":
        a_phrase = bare
    elif article_plural or article_mass:
        a_phrase = "some " + bare
    else:
        a_phrase = _engine().a(bare)
    return PhraseForms(text, the_phrase, a_phrase, bool(plural), head_word, bool(mass))


class TemplateError(ValueError):
    """A paraphrase file or template ieiw cannot use; the one-line message names the file and template."""


def template_placeholders(template: str) -> list[str]:
    """The placeholder names of a one-line template, in order. ``ValueError`` for an empty or multi-line
    template, an unmatched brace, or a placeholder with a format spec or conversion (``{name:>9}``, ``{name!r}``)."""
    if not template.strip():
        raise ValueError("empty template")
    if "\n" in template or "\r" in template:
        raise ValueError("a template is one line")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"{exc} (write a literal brace as {{{{ or }}}})") from None
    names = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if spec or conversion:
            raise ValueError(f"placeholder {{{name}}} has a format spec or conversion; write just {{{name}}}")
        names.append(name)
    return names


def check_template(template: str, task: str = "remove") -> None:
    """Raise ``ValueError`` saying what is wrong with one template of ``task`` (see the module docstring)."""
    replace = task == "replace"
    allowed_names = REPLACE_PLACEHOLDERS if replace else PLACEHOLDERS
    names = set()
    for name in template_placeholders(template):
        if name == "":
            raise ValueError("empty placeholder {}: name it, e.g. {the_phrase}")
        if name not in allowed_names:
            allowed = ", ".join("{" + p + "}" for p in sorted(p for p in allowed_names if p.islower()))
            example = "{The_source}" if replace else "{The_phrase}"
            raise ValueError(f"unknown placeholder {{{name}}}; allowed: {allowed} (capitalised: {example})")
        names.add(name.lower())
    if replace:
        if not names & SOURCE_PLACEHOLDERS:
            raise ValueError("names no source object: use {the_source}, {a_source} or {source}")
        if not names & TARGET_PLACEHOLDERS:
            raise ValueError("names no target object: use {a_target}, {the_target} or {target}")
    elif not names & PHRASE_PLACEHOLDERS:
        raise ValueError("names no object: use {the_phrase}, {a_phrase} or {phrase}")


def render(template: str, phrase: str, head: str | None = None) -> str:
    """``template`` filled in for ``phrase`` (``head``: see :func:`phrase_forms`)."""
    return template.format_map(phrase_forms(" ".join(phrase.split()), head).values())


def render_replace(template: str, source: str, target: str) -> str:
    """A replace ``template`` filled in for the phrases ``source`` and ``target`` (taken as written)."""
    values = replace_values(phrase_forms(" ".join(source.split())), phrase_forms(" ".join(target.split())))
    return template.format_map(values)
