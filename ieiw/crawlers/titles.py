"""Turn a request post's title and body (or an editor's comment) into an imperative edit instruction.

Requests are written for people, not models: they carry flair tags ("[Paid]"), bounties ("$10 to
whoever..."), greetings, emoji, "can someone..." openings, backstory and thanks. ``instruction_from_post``
runs them through a small pipeline of named steps and keeps only the edit, as one grammatical
imperative sentence: "Brighten this photo and add a blue balloon top left."

1. :func:`normalise_text`    - unify quotes/spaces; drop emoji and decorative symbols and emoticons.
2. :func:`strip_tags`        - flair tags anywhere ("[Paid]", "(Free)", "{Request}", "[$15]") and leading
                               "PAID:" / "Paid request -" labels.
3. :func:`split_sentences`   - the title, then the body, cut into sentences (title first).
4. :func:`sentence_case`     - an ALL-CAPS sentence becomes sentence case (quoted text is kept as written).
5. :func:`strip_bounties`    - amounts ("$10", "€5", "5 bucks") and bounty phrases ("will tip", "tipping $5",
                               "$10 to whoever can", "paid request", "will pay") in any position.
6. :func:`split_clauses`     - each sentence cut at commas, dashes, "and", "but", "so", "because", ...
7. :func:`strip_padding`     - openings ("hey guys", "can someone", "could anyone please", "would someone be
                               able to", "is it possible to", "I need someone to") and fillers ("please",
                               "pls", "for me", "if possible", "lol", "thanks in advance", "TIA").
8. :func:`rewrite_imperative` - wishes and passives become imperatives: "I want X removed" -> "Remove X",
                               "X needs to be brighter" -> "Make X brighter", "can the glare be removed" ->
                               "Remove the glare", "help removing X" -> "Remove X".
9. :func:`classify_clauses`  - a clause is a *request* (starts with an edit verb), *backstory* ("my grandma
                               passed away", "it's my favourite photo"), *noise* (thanks, payment, "is that
                               possible") or a *continuation* of the clause before ("..., the dog and the car").
                               Requests and their continuations are kept; everything else is dropped.
10. :func:`join_requests`    - the kept requests, deduplicated ("remove the ball" is inside "remove the red
                               ball"), joined as one sentence ("A, B and C"), capitalised, ending in a period
                               and cut to ``max_chars`` at a request boundary.

Non-English words are kept as they are. ``''`` when nothing editable is left (callers report
``no_instruction``). :func:`instruction_from_comment` turns an editor's past-tense description of
what they did ("removed the guy on the left") into the same imperative form.
Hand-written because no library knows this forum's conventions; each pattern is listed here so the
tests can pin them.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# --------------------------------------------------------------------------------------------------
# Edit-verb lexicon: base form -> (past tense, past participle) where irregular; regular forms derived.

_IRREGULAR = {
    "make": ("made", "made"),
    "take": ("took", "taken"),
    "put": ("put", "put"),
    "cut": ("cut", "cut"),
    "get": ("got", "gotten"),
    "give": ("gave", "given"),
    "draw": ("drew", "drawn"),
    "bring": ("brought", "brought"),
    "set": ("set", "set"),
    "leave": ("left", "left"),
    "keep": ("kept", "kept"),
    "light": ("lit", "lit"),
    "write": ("wrote", "written"),
    "split": ("split", "split"),
    "spread": ("spread", "spread"),
    "stick": ("stuck", "stuck"),
    "shift": ("shifted", "shifted"),
    "redo": ("redid", "redone"),
    "undo": ("undid", "undone"),
    "throw": ("threw", "thrown"),
}
_DOUBLING = {"crop", "swap", "trim", "slim", "flip", "blur", "unblur", "thin", "dim", "drop", "plan", "blot", "pin"}
EDIT_VERBS = frozenset(
    """add adjust airbrush alter balance blend blur brighten change clean clear clone close color colour colorize
    colourise colorise colourize combine convert copy correct cover create crop cut darken de-age declutter delete
    denoise desaturate design dim draw drop edit enhance enlarge erase even expand extend extract fade fill fix flip
    flatten get give hide improve insert isolate keep leave lengthen lighten lift light lower make match merge mirror
    move open paint paste photoshop place put raise recolor recolour redo reduce remove repair replace reposition
    resize restore retouch rotate saturate scale separate set sharpen shift shorten shrink slim smooth smoothen soften
    split straighten stretch swap switch take thin tidy tint tone touch transform trim turn unblur undo upscale
    vectorize vectorise whiten widen zoom age unwrinkle relight colourcorrect stylize stylise animate""".split()
)


def _past(verb: str) -> str:
    if verb in _IRREGULAR:
        return _IRREGULAR[verb][0]
    if verb in _DOUBLING:
        return verb + verb[-1] + "ed"
    if verb.endswith("e"):
        return verb + "d"
    if verb.endswith("y") and verb[-2] not in "aeiou":
        return verb[:-1] + "ied"
    return verb + "ed"


def _participle(verb: str) -> str:
    return _IRREGULAR[verb][1] if verb in _IRREGULAR else _past(verb)


def _gerund(verb: str) -> str:
    if verb in _DOUBLING or verb in {"cut", "put", "get", "set", "split"}:
        return verb + verb[-1] + "ing"
    if verb.endswith("e") and not verb.endswith("ee"):
        return verb[:-1] + "ing"
    return verb + "ing"


def _third(verb: str) -> str:
    if verb.endswith(("s", "sh", "ch", "x", "z")):
        return verb + "es"
    if verb.endswith("y") and verb[-2] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


PAST_TO_BASE: dict[str, str] = {}
PARTICIPLE_TO_BASE: dict[str, str] = {}
GERUND_TO_BASE: dict[str, str] = {}
THIRD_TO_BASE: dict[str, str] = {}
for _v in sorted(EDIT_VERBS):
    PAST_TO_BASE.setdefault(_past(_v), _v)
    PARTICIPLE_TO_BASE.setdefault(_participle(_v), _v)
    GERUND_TO_BASE.setdefault(_gerund(_v), _v)
    THIRD_TO_BASE.setdefault(_third(_v), _v)
PAST_TO_BASE.update({"did": "do", "tried": "try", "had": "have"})
# verbs that start a sentence but do not ask for an edit
NON_EDIT_VERBS = frozenset("tell explain teach recommend suggest identify know advise answer learn help find".split())
# verbs too vague, on their own object, to say what an editor did ("fixed it", "edited this")
VAGUE_VERBS = frozenset("fix edit do photoshop try redo touch improve change work".split())
VAGUE_OBJECTS = frozenset("it this that them these those one everything something pic photo picture image".split())


def _words(pattern_words: set[str] | dict[str, str] | frozenset[str]) -> str:
    return "|".join(sorted((re.escape(w) for w in pattern_words), key=len, reverse=True))


PARTICIPLE_ALT = _words(PARTICIPLE_TO_BASE)

# --------------------------------------------------------------------------------------------------
# 1. normalise_text

QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u00a0": " ", "\u2026": "..."})
EMOTICON_RE = re.compile(
    r"(?:(?<=\s)|^)(?:[:;=8xX][-']?[()\[\]DPpOo3/\\|*]+|<3+|\^_*\^|[Tt]_[Tt]|[-o0O]_[-o0O]|:'\()(?=\s|$|[.,!?])"
)
LAUGH_RE = re.compile(r"\b(?:lol+|lmf?ao+|rofl|haha(?:ha)*|hehe(?:he)*|xd+|jk|smh|omg)\b", re.IGNORECASE)
DECOR_RE = re.compile(r"(?:[*~_=#]{2,}|(?<!\w)[*~#](?!\w)|\^+)")
KEEP_SYMBOLS = set("°©®™")
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # where str.splitlines cuts
SPACES_RE = re.compile(f"[^\\S{LINE_BREAKS}]+")
SPACE_RUN_RE = re.compile(r"\s{2,}")


def _one_space(run: re.Match[str]) -> str:
    text = run.group()
    return "\n" if "\n" in text else next((c for c in text if c in LINE_BREAKS), " ")


def collapse_spaces(text: str) -> str:
    """Every run of whitespace as one character: a line break if it holds one ("\\n" first), else a space.

    The steps below read a run like one character (``\\s+``, ``\\n+``, ``str.splitlines``), so what they
    find is the same, and none of them meets a long run of spaces to backtrack over. (Unicode spaces,
    "\\u2003", become plain ones: clause ends are stripped of them now, and a flair tag padded with a long
    run of spaces may now fit its 30 characters.)
    """
    return SPACE_RUN_RE.sub(_one_space, SPACES_RE.sub(" ", text))


class _SymbolMap(dict):
    """``str.translate`` table: quotes unified, emoji, pictographs and other symbols to a space, the rest
    kept; each character is classified once and remembered (up to ``MAX`` characters)."""

    MAX = 65536

    def __missing__(self, code: int) -> int | str:
        ch = chr(code)
        cat = unicodedata.category(ch)
        symbol = ch not in KEEP_SYMBOLS and (
            cat in ("So", "Cs", "Co") or "\ufe00" <= ch <= "\ufe0f" or ch in "\u200d\u20e3" or (
                cat == "Sk" and code > 0xFFFF
            )
        )
        out: int | str = " " if symbol else code
        if len(self) < self.MAX:
            self[code] = out
        return out


SYMBOLS = _SymbolMap(QUOTES)


def normalise_text(text: str) -> str:
    """Unify quotes and spaces (each run of whitespace one character); remove emoji, pictographs, decorative
    runs ("~~", "**"), emoticons and "lol"."""
    text = collapse_spaces((text or "").translate(SYMBOLS))
    text = EMOTICON_RE.sub(" ", text)
    text = LAUGH_RE.sub(" ", text)
    text = DECOR_RE.sub(" ", text)
    return collapse_spaces(text).strip()


# --------------------------------------------------------------------------------------------------
# 2. strip_tags

MONEY = (
    r"(?:[$€£]\s*\d+(?:[.,]\d+)?(?:\s*(?:usd|eur|gbp|cad|aud))?|"
    r"(?<!\d)\d+(?:[.,]\d+)?\s*(?:[$€£]|usd|eur|gbp|dollars?|bucks|euros?|quid)(?![\w]))"
)
FLAIR_WORDS = (
    r"paid|free|unpaid|specific|serious|urgent|request|requests|sfw|tip(?:ping)?|tipped|easy|quick|help|"
    r"fun|meme|restoration|asap|question|solved|edit|update|reward|bounty"
)
TAG_RE = re.compile(
    r"[\[\(\{]\s*(?:(?:" + FLAIR_WORDS + r")\b|" + MONEY + r")[^\]\)\}]{0,30}[\]\)\}]",
    re.IGNORECASE,
)
LEAD_TAG_RE = re.compile(
    r"^\s*(?:(?:paid|free|unpaid|easy|quick|urgent|serious|specific)\s*(?:request\s*)?|request\s*)(?:[:\-|–—]+|\s(?=\w))\s*",
    re.IGNORECASE,
)
EMPTY_BRACKETS_RE = re.compile(r"[\[\(\{]\s*[\]\)\}]")


def strip_tags(text: str) -> str:
    """Remove flair tags in brackets anywhere and a leading "PAID:" / "Paid request -" / "Request:" label."""
    text = TAG_RE.sub(" ", text)
    text = EMPTY_BRACKETS_RE.sub(" ", text)
    text = LEAD_TAG_RE.sub("", text)
    return re.sub(r"\s+", " ", text).strip()


# --------------------------------------------------------------------------------------------------
# 3. split_sentences

SENTENCE_SPLIT_RE = re.compile(r"(?<=[.!?])(?<!\b[A-Z]\.)\s+|\n+|(?<=[!?])(?=[A-Za-z])")


def split_sentences(title: str, body: str) -> list[str]:
    """The title's sentences, then the body's (blank lines, ``.``/``!``/``?`` and newlines split)."""
    out: list[str] = []
    for text in (title, body):
        for s in SENTENCE_SPLIT_RE.split(text or ""):
            s = s.strip()
            if s:
                out.append(s)
    return out


# --------------------------------------------------------------------------------------------------
# 4. sentence_case

QUOTED_RE = re.compile(r"(\"[^\"]*\"|'[^']{2,}'(?!\w))")


def sentence_case(sentence: str) -> str:
    """An ALL-CAPS sentence (4+ letters, 80%+ upper case) in lower case, quoted text kept; others unchanged."""
    letters = [c for c in QUOTED_RE.sub("", sentence) if c.isalpha()]
    if len(letters) < 4 or sum(c.isupper() for c in letters) < 0.8 * len(letters):
        return sentence
    parts = QUOTED_RE.split(sentence)
    lowered = "".join(p if i % 2 else p.lower() for i, p in enumerate(parts))
    return re.sub(r"\bi(?=['\s]|$)", "I", lowered)


# --------------------------------------------------------------------------------------------------
# 5. strip_bounties

PAY_VERB = r"(?:tip|pay|venmo|paypal|cashapp|send|give|offer)"
BOUNTY_LEAD_RE = re.compile(
    r"^\s*(?:(?:i\s*(?:'ll|will)|will|can|happy\s+to|willing\s+to|gonna|going\s+to)\s+" + PAY_VERB + r"\s*|"
    r"(?:tipping|paying|offering)\s*|(?:tip|reward|bounty)\s*(?:[:=]\s*)?)?"
    r"(?:" + MONEY + r")\s*(?:(?:tip|reward|bounty)\s*)?(?:via\s+\w+\s*)?"
    r"(?:to|for)\s+(?:(?:the\s+)?(?:first|best)\s+(?:(?:one|person|edit|editor)\s*)?(?:to|who|that)\s+(?:can\s+)?|"
    r"(?:whoever|anyone|someone|somebody|the\s+person|anybody)\s+(?:who\s+|that\s+)?(?:can|could|will|does)?\s*)?",
    re.IGNORECASE,
)
AMOUNT_RE = re.compile(
    r"(?:(?<!\s)\s+)?(?:\b(?:for|at|of)\s+)?(?:(?:a\s+)?(?:tip|reward|bounty)\s*(?:(?:of|:)\s*)?)?"
    + MONEY
    + r"(?:\s*(?:tip|reward|bounty|via\s+\w+))?",
    re.IGNORECASE,
)
PAY_PHRASE_RE = re.compile(
    r"\b(?:paid\s+request|free\s+request|(?:i\s*(?:'ll|will)|will|can|happy\s+to|willing\s+to|gonna)\s+"
    r"(?:tip|pay)(?:\s+(?:well|you|something|a\s+little|a\s+bit))?)\b",
    re.IGNORECASE,
)


def strip_bounties(sentence: str) -> str:
    """Remove money amounts and bounty phrases, wherever they are; keep the request around them.

    "$10 to whoever can remove the sign" -> "remove the sign"; "remove the sign for $5" -> "remove the sign";
    "Will pay $10 to remove the guy" -> "remove the guy". Whole payment clauses ("will tip $5 to the best one")
    are left for :func:`classify_clauses`, which drops them as noise.
    """
    s = BOUNTY_LEAD_RE.sub("", sentence, count=1) if re.search(MONEY, sentence, re.IGNORECASE) else sentence
    s = AMOUNT_RE.sub(" ", s)
    s = PAY_PHRASE_RE.sub(" will tip ", s)  # left as a marker, dropped with its clause
    return re.sub(r"\s+", " ", s).strip()


# --------------------------------------------------------------------------------------------------
# 6. split_clauses

# A leading run of spaces is only taken whole, from its first character ("(?<!\s)"): a pattern that may
# start anywhere inside a run rescans the rest of it from each position (quadratic on a long run).
CLAUSE_SPLIT_RE = re.compile(
    r"((?:(?<!\s)\s+)?[,;]\s*(?:and\s+|but\s+|so\s+|then\s+|also\s+|plus\s+)?|:\s+|(?<!\s)\s+[-–—]+\s+|"
    r"(?<!\s)\s+&\s+|(?<!\s)\s+(?:and|but|so|then|because|cause|cuz|since|plus|as\s+well\s+as)\s+)",
    re.IGNORECASE,
)


@dataclass
class Clause:
    text: str
    connector: str  # the text that joined it to the clause before ("" for the first)
    kind: str = ""  # request / continuation / backstory / noise
    opened: bool = False  # a request opener ("can someone", "please") was stripped from its front


def split_clauses(sentence: str) -> list[Clause]:
    """Cut a sentence at commas, semicolons, dashes and conjunctions, keeping each clause's connector."""
    parts = CLAUSE_SPLIT_RE.split(sentence)
    clauses = [Clause(parts[0].strip(), "")]
    for i in range(1, len(parts), 2):
        clauses.append(Clause(parts[i + 1].strip(), parts[i]))
    return [c for c in clauses if c.text or c.connector]


# --------------------------------------------------------------------------------------------------
# 7. strip_padding

WHO = r"(?:someone|somebody|anyone|anybody|any\s*one|some\s*one|u|you|ya|y'all|you\s+guys|one\s+of\s+you|any\s+of\s+you|a\s+kind\s+soul|some\s+kind\s+soul|an?\s+(?:editor|wizard|expert|pro))"
GREETING = (
    r"(?:hi|hello|hey|heya|hiya|howdy|yo|greetings|dear|good\s+(?:morning|afternoon|evening|day))"
    r"(?:\s+(?:all|everyone|everybody|guys|gals|folks|there|team|friends|reddit|redditors|people|photoshoppers|"
    r"wizards|experts|editors|y'all|you\s+all))*"
)
OPENER_RE = re.compile(
    r"^(?:"
    r"(?:so|ok|okay|well|um+|uh+|alright)\b|"
    r"(?:please|pls|plz|pleas|kindly|pretty\s+please)\b|"
    r"(?:and\s+)?also\b|and\b|but\b|then\b|plus\b|just\b|maybe\b|possibly\b|simply\b|quick(?:ly)?\b|"
    r"(?:i\s+was\s+|i'm\s+|i\s+am\s+|was\s+|just\s+)?(?:wondering|hoping)\s+(?:if|whether|that)?\s*" + WHO + r"\s+"
    r"(?:can|could|would|will|might)\b|"
    r"(?:can|could|would|will|may|might)\s+" + WHO + r"(?:\s+(?:please|pls|plz|kindly|possibly|maybe|perhaps|"
    r"be\s+able\s+to|be\s+willing\s+to|be\s+so\s+kind\s+as\s+to|help\s+(?:me|us)?\s*(?:to|with|by)?|"
    r"try\s+(?:and|to)|have\s+a\s+go\s+at))*|"
    r"(?:is|would)\s+(?:it|this|that)\s+(?:be\s+)?possible(?:\s+for\s+" + WHO + r")?\s+to\b|"
    r"is\s+there\s+(?:any\s*way|a\s+way|anyone|someone|somebody|anybody)\s+(?:who|that)?\s*(?:can|could|would|to)?\b|"
    r"(?:" + WHO + r"|anyone\s+out\s+there)\s+(?:(?:able|willing|good|up)\s+(?:to|for)|want\s+to|wanna|"
    r"please|pls|who\s+can|that\s+can|can|could|would)\b|"
    r"(?:i|we)\s*(?:'d|would)?\s*(?:need|like|love|want|appreciate\s+it|be\s+grateful)\s+(?:it\s+)?"
    r"(?:if\s+)?" + WHO + r"\s+(?:to|could|can|would)\b|"
    r"(?:i\s+|we\s+)?(?:need|want|looking\s+for|searching\s+for|requesting)\s+(?:" + WHO + r"|help)\s*"
    r"(?:to|who\s+can|that\s+can|with|for)?\b|"
    r"(?:i\s+|we\s+)?(?:need|want|would\s+like|'d\s+like|'d\s+love|would\s+love)\s+to\b|"
    r"(?:need|want|looking\s+for|requesting)?\s*help\s+(?:me\s+|us\s+)?(?:to|with|by)?\b|"
    r"help\s+(?:me|us)\b|"
    r"(?:whoever|anyone\s+who|someone\s+who|the\s+first\s+(?:one|person)\s+to)\s*(?:can|could|will)?\b|"
    r"request(?:ing)?\b|"
    + GREETING
    + r"\b"
    r")\s*[,!.:\-]*\s*",
    re.IGNORECASE,
)
# Closing politeness ("..., please", "thanks in advance!", "for a friend", "if possible asap"): a run of these
# phrases that reaches the end of the clause, with spaces, a "?!." run and one "," or "-" between two of them.
# A regex anchored at ``$`` retries from every position and rescans the rest of the clause each time
# (quadratic: "a a a ... a" took seconds at 4 KB), so the run is found by one backward pass over the tokens
# instead (:func:`trailer_start`); it matches what that pattern matched (a test compares them).
TRAILER_PHRASES = (
    "please|pls|plz|thx|ty|tia|asap|anyone|someone|somebody|quickly|though|real quick|for me|for us|"
    "thank|thanks|thank so much|thanks so much|thank a lot|thanks a lot|thank in advance|thanks in advance|"
    "thank you|thank you so much|thank you in advance|if possible|if you can|"
    "if anyone can|if anyone could|if someone can|if someone could|if somebody can|if somebody could|"
    "if that's possible|if that is possible|if it's possible|if it is possible|"
    "friend|mate|for friend|for mate|a friend|a mate|for a friend|for a mate|"
    "for _|a _|for a _"  # "for", "a", "for a" only with a space after them ("_": the space is part of the phrase)
).split("|")
_TOKEN_RE = re.compile(r"(\s+)|(\w+)|([?!.]+)|(.)", re.DOTALL)
_SP, _WORD, _PUNCT, _OTHER, _COMMA = 1, 2, 3, 4, 5  # _COMMA: one "," or "-"
_BETWEEN = (_SP, _PUNCT, _SP, _COMMA, _SP)  # between two phrases: each part optional, in this order
_FINAL = (_SP, _PUNCT, _SP)  # after the last phrase
_BEFORE = (_SP, _COMMA, _SP)  # before the first phrase


def _phrase_index() -> dict[str, list[tuple[str, ...]]]:
    """First word -> the phrases that start with it, as token tuples (``" "`` stands for any whitespace)."""
    out: dict[str, list[tuple[str, ...]]] = {}
    for phrase in TRAILER_PHRASES:
        toks = tuple(" " if t == "_" else t for t in (m.group() for m in _TOKEN_RE.finditer(phrase)))
        toks = tuple(t for i, t in enumerate(toks) if not (t == " " and i and toks[i - 1] == " "))
        out.setdefault(toks[0], []).append(toks)
    return out


_PHRASES = _phrase_index()
_LOOKAHEAD = max(len(p) for ps in _PHRASES.values() for p in ps) + len(_BETWEEN) + 1


def _reaches(kinds: list[int], q: int, pattern: tuple[int, ...], flags: list[bool]) -> bool:
    """Whether the tokens after boundary ``q``, read forward, can be ``pattern`` (each element optional,
    in order) up to a boundary ``j`` with ``flags[j]``. Tokens and boundaries count from the end of the
    text: boundary ``q`` has the ``q`` last tokens after it, read as ``kinds[q - 1], ..., kinds[0]``."""
    if flags[q]:
        return True
    state = 0
    for r in range(q - 1, -1, -1):
        try:
            state = pattern.index(kinds[r], state) + 1
        except ValueError:
            return False
        if flags[r]:
            return True
    return False


def _to_the_end(kinds: list[int], q: int, pattern: tuple[int, ...]) -> bool:
    """Whether all the tokens after boundary ``q`` are ``pattern`` (each element optional, in order)."""
    if q > len(pattern):
        return False
    state = 0
    for r in range(q - 1, -1, -1):
        try:
            state = pattern.index(kinds[r], state) + 1
        except ValueError:
            return False
    return True


def trailer_start(text: str) -> int:
    """Where the run of closing politeness phrases at the end of ``text`` starts; ``len(text)`` if none.

    The tokens are read from the end. For each boundary ``q`` (``q`` tokens after it): ``tail[q]``, the
    tokens after it are separators and phrases up to the end (what may follow a phrase); ``phrase[q]``, a
    phrase starts there and a tail follows it. The run starts at the leftmost boundary that has separators
    and then a phrase after it (or that follows a word and has a tail after it). Every value looks at most
    ``_LOOKAHEAD`` tokens ahead, so the pass stops after that many boundaries without a tail or a phrase:
    linear in the text, and only as long as the run itself on ordinary text.
    """
    toks: list[str] = []  # from the end: toks[0] is the last token (lower case)
    kinds: list[int] = []
    tail, phrase = [True], [False]
    ends = [len(text)]  # ends[q]: the character offset of boundary q
    start, quiet = len(text), 0
    for m in _TOKEN_RE.finditer(text[::-1]):
        kind = m.lastindex or _OTHER
        tok = m.group()[::-1]
        if kind == _OTHER and tok in ",-":
            kind = _COMMA
        q = len(toks)
        if kind == _WORD and q and tail[q]:
            start = ends[q]  # the run may start right after this word
        toks.append(" " if kind == _SP else tok.lower())
        kinds.append(kind)
        ends.append(ends[q] - len(tok))
        q += 1
        found = False
        if kind == _WORD:
            for p in _PHRASES.get(toks[q - 1], ()):
                n = len(p)
                if n <= q and tail[q - n] and all(toks[q - 1 - i] == t for i, t in enumerate(p)):
                    found = True
                    break
        phrase.append(found)
        tail.append(_reaches(kinds, q, _BETWEEN, phrase) or _to_the_end(kinds, q, _FINAL))
        if _reaches(kinds, q, _BEFORE, phrase):
            start = ends[q]
        quiet = 0 if (tail[q] or found) else quiet + 1
        if quiet > _LOOKAHEAD:
            break
    return start


FILLER_RE = re.compile(r"(?:(?<!\s)\s+)?\b(?:please|pls|plz|kindly)\b\s*", re.IGNORECASE)


def strip_padding(clause: Clause) -> Clause:
    """Remove greetings, request openings and politeness fillers from the front, middle and end of a clause."""
    text = clause.text
    for _ in range(8):
        new = OPENER_RE.sub("", text, count=1)
        if new == text:
            break
        clause.opened = True
        text = new
    text = text[: trailer_start(text)]
    text = FILLER_RE.sub(" ", text)
    clause.text = re.sub(r"\s+", " ", text).strip(" ,;:-?!.")
    return clause


# --------------------------------------------------------------------------------------------------
# 8. rewrite_imperative

WISH = r"(?:i|we)\s*(?:(?:'d|would)\s+(?:like|love)|want(?:ed)?|need|wish\s+to\s+have|'m\s+hoping\s+to\s+(?:get|have))"
WISH_PASSIVE_RE = re.compile(
    r"^(?:" + WISH + r"\s+|(?:need|want|get|have)\s+)(?:to\s+(?:get|have)\s+)?(?P<obj>.+?)\s+(?:to\s+be\s+|be\s+)?"
    r"(?P<part>" + PARTICIPLE_ALT + r")\b(?P<rest>.*)$",
    re.IGNORECASE,
)
WISH_TO_BE_RE = re.compile(r"^" + WISH + r"\s+(?P<obj>.+?)\s+to\s+(?:be|look)\s+(?P<rest>.+)$", re.IGNORECASE)
WISH_TO_VERB_RE = re.compile(r"^" + WISH + r"\s+(?P<obj>.+?)\s+to\s+(?P<rest>\w.+)$", re.IGNORECASE)
QUESTION_PASSIVE_RE = re.compile(
    r"^(?:can|could|would|will)\s+(?P<obj>.+?)\s+be\s+(?P<part>" + PARTICIPLE_ALT + r")\b(?P<rest>.*)$", re.IGNORECASE
)
NEEDS_PASSIVE_RE = re.compile(
    r"^(?P<obj>(?:\S+\s+){0,6}?\S+)\s+(?:needs?|should|has\s+to|have\s+to|must)\s+(?:to\s+)?(?:be\s+)?"
    r"(?P<part>" + PARTICIPLE_ALT + r"|" + _words(GERUND_TO_BASE) + r")\b(?P<rest>.*)$",
    re.IGNORECASE,
)
NEEDS_ADJ_RE = re.compile(
    r"^(?P<obj>(?:\S+\s+){0,6}?\S+)\s+(?:needs?\s+to\s+be|should\s+be|has\s+to\s+be|must\s+be)\s+(?P<rest>.+)$",
    re.IGNORECASE,
)
BARE_PASSIVE_RE = re.compile(
    r"^(?P<obj>(?:\S+\s+){0,5}?\S+)\s+(?P<part>" + PARTICIPLE_ALT + r")"
    r"(?P<rest>(?:\s+(?:from|in|on|at|to|into|with|out|off|away|up|behind|and|so)\b.*)?)$",
    re.IGNORECASE,
)
NOMINAL = {
    "removal": "remove",
    "replacement": "replace",
    "restoration": "restore",
    "colorization": "colorize",
    "colourisation": "colourise",
    "colorisation": "colorise",
    "enhancement": "enhance",
    "retouch": "retouch",
    "cleanup": "clean up",
}
NOMINAL_RE = re.compile(
    r"^(?P<obj>(?:[\w'-]+\s+){0,3}?[\w'-]+)\s+(?P<noun>" + _words(NOMINAL) + r")$", re.IGNORECASE
)
SUBJECT_WORDS = re.compile(r"^(?:i|we|he|she|they|you|my|our|his|their|i'm|it's)\b", re.IGNORECASE)


def _base_of(word: str) -> str | None:
    w = word.lower()
    return PARTICIPLE_TO_BASE.get(w) or GERUND_TO_BASE.get(w) or PAST_TO_BASE.get(w)


def rewrite_imperative(clause: Clause) -> Clause:
    """Turn wishes, passives and gerunds into an imperative: "I want X removed" -> "Remove X".

    Also "I'd like the sky to be blue" -> "Make the sky blue", "I want him to look happier" -> "Make him look
    happier", "can the glare be removed" -> "Remove the glare", "X needs to be brighter" -> "Make X brighter",
    "background removal" -> "Remove the background", "removing X" -> "Remove X".
    """
    t = clause.text
    m = WISH_PASSIVE_RE.match(t) or QUESTION_PASSIVE_RE.match(t)
    if m and not re.search(r"\b(?:to|be)\s*$", m["obj"]):
        clause.text = f"{_base_of(m['part'])} {m['obj']}{m['rest']}"
        clause.opened = True
        return clause
    m = WISH_TO_BE_RE.match(t)
    if m:
        clause.text = f"make {m['obj']} {'look ' if ' to look ' in t.lower() else ''}{m['rest']}"
        clause.opened = True
        return clause
    m = WISH_TO_VERB_RE.match(t)
    if m:
        clause.text = f"make {m['obj']} {m['rest']}"
        clause.opened = True
        return clause
    m = NEEDS_PASSIVE_RE.match(t)
    if m and not SUBJECT_WORDS.match(m["obj"]) or (m and m["obj"].lower() in VAGUE_OBJECTS):
        clause.text = f"{_base_of(m['part'])} {_lower_first(m['obj'])}{m['rest']}"
        return clause
    m = NEEDS_ADJ_RE.match(t)
    if m and (not SUBJECT_WORDS.match(m["obj"]) or m["obj"].lower() in VAGUE_OBJECTS):
        clause.text = f"make {_lower_first(m['obj'])} {m['rest']}"
        return clause
    m = NOMINAL_RE.match(t)
    if m and not SUBJECT_WORDS.match(m["obj"]):
        obj = _lower_first(m["obj"])
        if not re.match(r"(?:the|a|an|this|that|these|those|some)\b", obj, re.IGNORECASE):
            obj = "the " + obj
        clause.text = f"{NOMINAL[m['noun'].lower()]} {obj}"
        return clause
    m = BARE_PASSIVE_RE.match(t)
    if m and _plain_object(m["obj"]):
        clause.text = f"{_base_of(m['part'])} {_lower_first(m['obj'])}{m['rest']}"
        return clause
    words = t.split(maxsplit=1)
    if words:
        w = words[0].lower()
        base = GERUND_TO_BASE.get(w) or THIRD_TO_BASE.get(w)
        if base:
            clause.text = " ".join([base, *words[1:]])
    return clause


# --------------------------------------------------------------------------------------------------
# 9. classify_clauses

NOISE_RE = re.compile(
    r"\b(?:tip(?:s|ping|ped)?|venmo|paypal|cash\s?app|zelle|payment|pay(?:ing)?|paid|reward|bounty|"
    r"thanks?|thank\s+you|thx|tia|appreciated?|cheers|upvote|dm\s+me|pm\s+me|solved|"
    r"(?:will|i'll|i\s+will)\s+(?:choose|pick|select|award)|best\s+(?:one|edit)|first\s+(?:one|to)|"
    r"hope\s+(?:this|that|someone|you)|let\s+me\s+know|sorry|right\s+sub|new\s+here|in\s+advance|any\s+help)\b",
    re.IGNORECASE,
)
BACKSTORY_START_RE = re.compile(
    r"^(?:i|i'm|im|i've|ive|i'd|i'll|we|we're|we've|he|he's|she|she's|they|they're|it's|its|it|this|that|"
    r"that's|there|there's|here|here's|these|those|unfortunately|sadly|recently|yesterday|today|last|when|if|as|"
    r"because|since|though|although|not|no|nothing|just|only|for|is|are|was|were|can|could|would|will|does|do|"
    r"did|what|how|why|who|any|anything|idk|btw|ps|edit|update|original|source|photo|pic|picture|image)\b",
    re.IGNORECASE,
)
NARRATIVE_VERB_RE = re.compile(
    r"\b(?:is|was|are|were|am|has|had|have|passed|died|took|got|gets|loves?|wanted|wants|likes?|"
    r"turned|came|went|became|'s|'re|'ve|can't|didn't|don't|doesn't|won't)\b",
    re.IGNORECASE,
)
PAY_TAIL_RE = re.compile(r"(?:(?<!\s)\s+)?\b(?:will\s+tip|venmo|paypal|cash\s?app|zelle|paying|thanks?|thank\s+you|tia)\b.*$", re.I)
NEGATIVE_IMPERATIVE_RE = re.compile(r"^(?:don't|do\s+not|dont|never)\s+(\w+)", re.IGNORECASE)
DETERMINERS = frozenset("the a an this that these those my our his her their its it me him them us some any".split())


def _plain_object(text: str) -> bool:
    """A noun phrase that can be the object of an imperative: no subject pronoun, auxiliary or leading verb."""
    words = text.lower().split()
    return bool(words) and not (
        SUBJECT_WORDS.match(text)
        or BACKSTORY_START_RE.match(text)
        or words[0] in EDIT_VERBS
        or any(w in {"is", "was", "are", "were", "be", "been", "has", "have", "had", "got", "get"} for w in words)
    )


def _is_request(clause: Clause) -> bool:
    t = clause.text
    if not t:
        return False
    first = t.split()[0].lower().strip("\"'")
    if first in NON_EDIT_VERBS:
        return False
    if first in EDIT_VERBS:
        return not (first in {"make", "get", "take", "give", "set", "keep", "leave"} and len(t.split()) == 1)
    m = NEGATIVE_IMPERATIVE_RE.match(t)
    if m and m.group(1).lower() in EDIT_VERBS:
        return True
    # an unknown word right after "can someone" / "please" is a verb by grammar ("can someone unwrinkle my shirt")
    return clause.opened and first.isalpha() and first not in DETERMINERS and not BACKSTORY_START_RE.match(t)


def _is_backstory(text: str) -> bool:
    if BACKSTORY_START_RE.match(text):
        return True
    return bool(re.match(r"(?:my|our|his|her|their|the)\b", text, re.IGNORECASE) and NARRATIVE_VERB_RE.search(text))


def classify_clauses(clauses: list[Clause]) -> list[Clause]:
    """Label each clause request / continuation / backstory / noise (see the module docstring)."""
    prev = ""
    for c in clauses:
        conn = c.connector.strip(" ,;").lower()
        if not c.text:
            c.kind = "noise"
        elif conn in {"because", "cause", "cuz", "since"}:
            c.kind = "backstory"
        elif _is_request(c):
            c.kind = "request"  # a request keeps its words ("the tip of the pen"), less a glued-on "will tip ..."
            c.text = PAY_TAIL_RE.sub("", c.text)
        elif NOISE_RE.search(c.text):
            c.kind = "noise"
        elif _is_backstory(c.text) or conn == "so" or prev not in {"request", "continuation"}:
            c.kind = "backstory"
        else:
            c.kind = "continuation"
        if c.kind != "noise":
            prev = c.kind
    return clauses


# --------------------------------------------------------------------------------------------------
# 10. join_requests

STOP = frozenset("the a an this that it please also in of on from to".split())


def _tokens(text: str) -> set[str]:
    return {w for w in re.findall(r"[\w']+", text.lower()) if w not in STOP}


def _tidy(text: str) -> str:
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)
    text = re.sub(r"([,;:])(?=\w)", r"\1 ", text)
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"^(?:and|but|so|then|also|plus)\s+", "", text, flags=re.IGNORECASE)
    text = re.sub(r"\s*\b(?:and|or|but|with|to|the|a|an|of)\s*$", "", text, flags=re.IGNORECASE)
    return text.strip(" ,;:-–—?!.~")


def _capitalise(text: str) -> str:
    for i, ch in enumerate(text):
        if ch.isalpha():
            return text[:i] + ch.upper() + text[i + 1 :]
        if ch not in "\"'(":
            break
    return text


def _lower_first(text: str) -> str:
    first = text.split(maxsplit=1)[0] if text else ""
    if first[:1].isupper() and (first[1:].islower() or len(first) == 1) and first != "I":
        return first.lower() + text[len(first) :]
    return text


def _join(items: list[tuple[str, str]]) -> str:
    out = ""
    for i, (text, conn) in enumerate(items):
        if i == 0:
            out = _capitalise(text)
        elif conn == "but":
            out += f" but {_lower_first(text)}"
        elif i == len(items) - 1:
            out += f" and {_lower_first(text)}"
        else:
            out += f", {_lower_first(text)}"
    return out


MAX_REQUESTS = 64  # request items deduplicated per post; a real request has a handful


def join_requests(items: list[tuple[str, str]], max_chars: int) -> str:
    """Deduplicate the request items, join them as one sentence ending in a period, within ``max_chars``.

    Only the first ``MAX_REQUESTS`` items count: deduplication compares every pair, and a post listing
    thousands of requests is not one edit.
    """
    kept: list[tuple[str, str, set[str]]] = []
    for text, conn in items[:MAX_REQUESTS]:
        text = _tidy(text)
        if not text:
            continue
        toks = _tokens(text)
        dup = False
        for i, (_other, oconn, otoks) in enumerate(kept):
            if toks <= otoks:
                dup = True
                break
            if otoks <= toks:
                kept[i] = (text, oconn, toks)
                dup = True
                break
        if not dup:
            kept.append((text, conn, toks))
    if not kept or max_chars < 2:
        return ""
    pairs = [(text, conn) for text, conn, _ in kept]
    # the longest prefix of the requests that fits (each request makes the sentence longer)
    best = ""
    for n in range(1, len(pairs) + 1):
        candidate = _join(pairs[:n]) + "."
        if len(candidate) > max_chars:
            break
        best = candidate
    if best:
        return best
    out = _join(pairs[:1]) + "."
    cut = out[: max_chars - 1]
    if " " in cut and not out[max_chars - 1 : max_chars].isspace():
        cut = cut.rsplit(" ", 1)[0]
    cut = _tidy(cut)
    return (cut + ".") if cut else ""


# --------------------------------------------------------------------------------------------------
# pipeline


def request_items(sentences: list[str], limit: int | None = None) -> list[tuple[str, str]]:
    """Steps 4-9 over sentences: the request clauses (with their continuations) as (text, connector) items;
    the sentences after the one that brings the count to ``limit`` are not read."""
    items: list[tuple[str, str]] = []
    for raw in sentences:
        if limit is not None and len(items) >= limit:
            break
        s = strip_bounties(sentence_case(raw))
        clauses = [rewrite_imperative(strip_padding(c)) for c in split_clauses(s)]
        current: list[str] | None = None
        for c in classify_clauses(clauses):
            if c.kind == "request":
                if current is not None:
                    items.append(("".join(current), conn))
                conn = c.connector.strip(" ,;").lower()
                current = [c.text]
            elif c.kind == "continuation" and current is not None:
                current.append(c.connector + c.text)
            elif c.kind == "backstory" and current is not None:
                items.append(("".join(current), conn))
                current = None
        if current is not None:
            items.append(("".join(current), conn))
    return items


def instruction_from_post(title: str, body: str, max_chars: int = 400) -> str:
    """The request as one imperative sentence: tags, bounties, padding, emoji and backstory removed.

    ``''`` when nothing editable is left.
    """
    title = strip_tags(normalise_text(title))
    body = normalise_text(body)
    body = "\n".join(strip_tags(line) for line in body.splitlines())
    return join_requests(request_items(split_sentences(title, body), MAX_REQUESTS), max_chars)


# --------------------------------------------------------------------------------------------------
# editor comments

URL_RE = re.compile(r"!?\[([^\[\]]*)\]\([^)\]]*\)|https?://\S+|www\.\S+")
COMMENT_OPENER_RE = re.compile(
    r"^(?:here\s+you\s+go|here\s+ya\s+go|here\s+it\s+is|here's\s+(?:my\s+)?(?:attempt|try|version|edit|one|mine)|"
    r"here|hope\s+(?:this|that|it)\s+helps|hope\s+you\s+like\s+it|done|voila|ta-?da|ok|okay|so|well|hey|hi|"
    r"not\s+perfect(?:\s+but)?|quick\s+(?:one|edit|attempt)|my\s+(?:attempt|try|version))\b"
    r"\s*[,!.:\-]*\s*",
    re.IGNORECASE,
)
COMMENT_SUBJECT_RE = re.compile(
    r"^(?:i\s*(?:'ve|\s+have)?|we\s*(?:'ve|\s+have)?|i\s+also|i\s+just|just|also|and|then|plus|i\s+quickly|quickly)\s+",
    re.IGNORECASE,
)
PAST_ALT = _words(PAST_TO_BASE | PARTICIPLE_TO_BASE)
PAST_CLAUSE_RE = re.compile(r"^(?P<verb>" + PAST_ALT + r")\b(?P<rest>.*)$", re.IGNORECASE)


ATTEMPT_RE = re.compile(
    r"^(?:i\s+)?(?:just\s+|quickly\s+)?(?:tried\s+to|did\s+my\s+best\s+to|had\s+a\s+go\s+at|went\s+ahead\s+and)"
    r"\s+(\w+)",
    re.IGNORECASE,
)


def _past_clause(text: str) -> str | None:
    """'removed the guy' -> 'remove the guy'; None unless the clause states a specific past-tense edit."""
    text = COMMENT_OPENER_RE.sub("", text.strip())
    m = ATTEMPT_RE.match(text)  # "tried to remove X" / "had a go at removing X" -> "removed X"
    if m and (m[1].lower() in EDIT_VERBS or m[1].lower() in GERUND_TO_BASE):
        text = _past(GERUND_TO_BASE.get(m[1].lower(), m[1].lower())) + text[m.end() :]
    for _ in range(4):
        new = COMMENT_SUBJECT_RE.sub("", text)
        new = COMMENT_OPENER_RE.sub("", new)
        if new == text:
            break
        text = new
    text = text.strip(" ,;:-?!.")
    m = PAST_CLAUSE_RE.match(text)
    if m:
        verb = m["verb"].lower()
        base = PAST_TO_BASE.get(verb) or PARTICIPLE_TO_BASE.get(verb)
        to = re.match(r"\s*(?:my\s+best\s+)?to\s+(\w+)(.*)", m["rest"])
        if to and verb in {"tried", "did"} and to[1].lower() in EDIT_VERBS:
            return _past_clause(_past(to[1].lower()) + to[2])
        if gerund := re.match(r"\s*(?:at\s+|with\s+)?(\w+ing)\b(.*)", m["rest"]):
            if verb in {"tried", "did", "had"} and GERUND_TO_BASE.get(gerund[1].lower()):
                return _past_clause(_participle(GERUND_TO_BASE[gerund[1].lower()]) + gerund[2])
        if not base or base not in EDIT_VERBS:
            return None
        rest = m["rest"].strip()
        obj = {w for w in re.findall(r"[\w']+", rest.lower()) if w not in STOP | {"a", "bit", "little", "up"}}
        if base in VAGUE_VERBS and not (obj - VAGUE_OBJECTS):
            return None
        if not rest and base not in {"brighten", "darken", "crop", "sharpen", "straighten", "desaturate"}:
            return None
        return f"{base} {rest}".strip()
    m = BARE_PASSIVE_RE.match(text)
    if m and _plain_object(m["obj"]):
        return f"{_base_of(m['part'])} {_lower_first(m['obj'])}{m['rest']}"
    return None


def instruction_from_comment(comment_body: str) -> str | None:
    """An editor's past-tense account of their edit as an imperative instruction; None when it is vague.

    "removed the guy on the left" -> "Remove the guy on the left."; "I brightened it and fixed the colours" ->
    "Brighten it and fix the colours."; "here you go", "done!", "hope this helps" -> None.
    """
    text = URL_RE.sub(lambda m: f" {m.group(1) or ''} ", comment_body or "")
    text = normalise_text(text)
    items: list[tuple[str, str]] = []
    for sentence in split_sentences(text, ""):
        if len(items) >= MAX_REQUESTS:  # join_requests reads no more
            break
        sentence = sentence_case(sentence)
        current: list[str] | None = None
        conn = ""
        for c in split_clauses(sentence):
            edit = _past_clause(c.text) if c.text else None
            if edit:
                if current is not None:
                    items.append(("".join(current), conn))
                conn, current = c.connector.strip(" ,;").lower(), [edit]
            elif current is not None and c.text and not (
                NOISE_RE.search(c.text) or _is_backstory(c.text) or COMMENT_OPENER_RE.match(c.text)
            ) and c.connector.strip(" ,;").lower() not in {"because", "cause", "since", "so", "but"}:
                current.append(c.connector + c.text)
            elif current is not None:
                items.append(("".join(current), conn))
                current = None
        if current is not None:
            items.append(("".join(current), conn))
    out = join_requests(items, 400)
    return out or None
