"""Turn a request's title and body into an editing instruction.

Requests are written for people, not models: they carry tags ("[Paid]"), tips and payment talk,
greetings and thanks. Those parts are removed sentence by sentence (and clause by clause for payment
talk glued onto a request, "remove the sign, will tip $5"), the request itself is kept verbatim.
Hand-written because no library knows this forum's conventions; each pattern is listed here so the
tests can pin them.
"""

from __future__ import annotations

import re

TAG_RE = re.compile(
    r"[\[\(\{]\s*(?:paid|free|specific|serious|urgent|request|sfw|tip(?:ping)?|easy|quick|help|\$\s*\d[^\]\)\}]*)"
    r"[^\]\)\}]{0,24}[\]\)\}]",
    re.IGNORECASE,
)
LEAD_TAG_RE = re.compile(r"^\s*(?:paid|free|unpaid)\s*(?:request)?\s*[:\-|]+\s*", re.IGNORECASE)
GREETING_RE = re.compile(
    r"^\s*(?:hi|hello|hey|hiya|howdy|greetings|good (?:morning|afternoon|evening))"
    r"(?:\s+(?:all|everyone|everybody|guys|folks|there|team|friends|reddit|photoshoppers|wizards|y'all))?"
    r"\s*[,!.:\-]*\s*",
    re.IGNORECASE,
)
MONEY = r"(?:\$\s*\d+(?:[.,]\d+)?|\d+(?:[.,]\d+)?\s*(?:\$|usd|dollars|bucks|eur|euros|£|€))"
NOISE_SENTENCE_RE = re.compile(
    r"\b(?:tip(?:s|ping|ped)?|venmo|paypal|cash\s?app|zelle|payment|pay(?:ing)?|paid|reward|bounty|"
    r"thanks?|thank\s+you|tia|appreciated?|cheers|upvote|dm\s+me|edit\s*:|update\s*:|solved|"
    r"(?:will|i'll)\s+(?:choose|pick|select))\b",
    re.IGNORECASE,
)
PAY_CLAUSE_RE = re.compile(
    r"\s*(?:[,;\-]|\band\b)\s*(?:i\s*(?:'ll|will)|will|can|happy\s+to|willing\s+to)\s+"
    r"(?:tip|pay|venmo|paypal)\b[^.!?\n]*",
    re.IGNORECASE,
)
MONEY_RE = re.compile(r"[\[\(]?\s*" + MONEY + r"(?:\s*(?:tip|reward))?\s*[\]\)]?", re.IGNORECASE)
SENTENCE_SPLIT_RE = re.compile(r"(?<=[.!?])\s+|\n+")
SPACES_RE = re.compile(r"\s+")


def _clean_sentence(sentence: str) -> str:
    s = PAY_CLAUSE_RE.sub("", sentence)
    s = GREETING_RE.sub("", s, count=1)
    if NOISE_SENTENCE_RE.search(s):
        return ""
    s = MONEY_RE.sub(" ", s)  # a bare amount glued to a request ("... green? $20")
    s = SPACES_RE.sub(" ", s).strip(" -,;:")
    if not s:
        return ""
    return s[0].upper() + s[1:]


def clean_title(title: str) -> str:
    t = TAG_RE.sub(" ", title)
    t = LEAD_TAG_RE.sub("", t)
    return _clean_sentence(t) if t.strip() else ""


def clean_instruction(title: str, body: str, max_chars: int = 400) -> str:
    """The request with tags, tips, greetings and payment talk removed; '' when nothing is left."""
    parts: list[str] = []
    t = clean_title(title)
    if t:
        parts.append(t)
    for raw in SENTENCE_SPLIT_RE.split(body or ""):
        s = _clean_sentence(raw.strip())
        if not s or any(s.lower() in p.lower() for p in parts):
            continue
        parts.append(s)
    out = ""
    for p in parts:
        if p[-1] not in ".!?":
            p += "."
        candidate = f"{out} {p}".strip()
        if len(candidate) > max_chars:
            break
        out = candidate
    if not out and parts:
        out = parts[0][:max_chars].rstrip()
    return out
