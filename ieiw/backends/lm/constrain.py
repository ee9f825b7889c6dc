"""Answers held to a pattern: fixed text, choices among a few strings, then optionally free text.

A :class:`Pattern` is a sequence of parts, each a tuple of alternative strings (a literal is one
alternative), and ``free_tail``: whether any text may follow the last part. ``Pattern.choice(["yes",
"no"])`` is the self-check's answer; the judge's is ``"instruction: " (0..10) "\\npreservation: " (0..10)
... "\\nreason: " free text``. A pattern is enforced two ways:

- locally, token by token (:func:`compile_pattern` -> ``prefix_allowed_tokens_fn`` of ``generate``): each
  alternative is tokenised on its own, the alternatives of a part form a token trie, and a step allows the
  tokens that continue some alternative (or start the next part where one is complete);
- over HTTP, as vLLM's ``guided_choice`` (a single choice part) or ``guided_regex`` (:meth:`Pattern.to_regex`);
  a server that ignores them answers in free text, which the callers parse leniently anyway.

So even a randomly initialised model answers in a parseable form; what it answers is still the model's.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

FREE_TAIL_REGEX = "[^\\n]*"


@dataclass(frozen=True)
class Pattern:
    parts: tuple[tuple[str, ...], ...]
    free_tail: bool = False

    @classmethod
    def choice(cls, options: Sequence[str]) -> Pattern:
        return cls((tuple(options),))

    @classmethod
    def integer(cls, low: int, high: int) -> tuple[str, ...]:
        """The alternatives of an integer slot (a part): ``"low"`` ... ``"high"``."""
        return tuple(str(value) for value in range(low, high + 1))

    def is_choice(self) -> bool:
        return len(self.parts) == 1 and not self.free_tail

    def to_regex(self) -> str:
        """The pattern as a regular expression (vLLM's ``guided_regex``); :meth:`from_regex` reads it back."""
        out = []
        for part in self.parts:
            escaped = [re.escape(option) for option in part]
            out.append(escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")")
        return "".join(out) + (FREE_TAIL_REGEX if self.free_tail else "")

    @classmethod
    def from_regex(cls, regex: str) -> Pattern:
        """The inverse of :meth:`to_regex` (only what it writes: escaped literals, groups of literal
        alternatives, a trailing ``[^\\n]*``); ``ValueError`` for anything else."""
        free_tail = regex.endswith(FREE_TAIL_REGEX)
        body = regex[: -len(FREE_TAIL_REGEX)] if free_tail else regex
        parts: list[tuple[str, ...]] = []
        literal: list[str] = []
        index = 0

        def flush() -> None:
            if literal:
                parts.append(("".join(literal),))
                literal.clear()

        while index < len(body):
            char = body[index]
            if char == "\\":
                literal.append(_unescape(body[index + 1]))
                index += 2
            elif char == "(":
                flush()
                options, current, index = [], [], index + 1
                while body[index] != ")":
                    if body[index] == "\\":
                        current.append(_unescape(body[index + 1]))
                        index += 2
                    elif body[index] == "|":
                        options.append("".join(current))
                        current, index = [], index + 1
                    else:
                        current.append(body[index])
                        index += 1
                options.append("".join(current))
                parts.append(tuple(options))
                index += 1
            elif char in "[]{}*+?.^$|)":
                raise ValueError(f"not a pattern regex: {regex!r} (at {index}: {char!r})")
            else:
                literal.append(char)
                index += 1
        flush()
        return cls(tuple(parts), free_tail)


def _unescape(char: str) -> str:
    return {"n": "\n", "t": "\t"}.get(char, char)


class _Node:
    __slots__ = ("children", "terminal")

    def __init__(self) -> None:
        self.children: dict[int, _Node] = {}
        self.terminal = False


def _trie(sequences: Sequence[Sequence[int]]) -> _Node:
    root = _Node()
    for sequence in sequences:
        node = root
        for token in sequence:
            node = node.children.setdefault(int(token), _Node())
        node.terminal = True
    return root


@dataclass
class CompiledPattern:
    """A :class:`Pattern` over one tokenizer's ids: :meth:`allowed` after some generated tokens."""

    tries: list[_Node]
    free_tail: bool
    eos: list[int]
    vocab_size: int

    @functools.cached_property
    def everything(self) -> list[int]:
        """Every id: what the free tail allows, built once (a 150k-id list per token and row was the judge's
        bottleneck on the CPU side of generation)."""
        return list(range(self.vocab_size))

    def _closure(self, states: list[tuple[int, _Node]]) -> list[tuple[int, _Node]]:
        out, stack = [], list(states)
        while stack:
            part, node = stack.pop()
            out.append((part, node))
            if node.terminal and part < len(self.tries):
                stack.append((part + 1, self.tries[part + 1] if part + 1 < len(self.tries) else _DONE))
        return out

    def allowed(self, generated: Sequence[int]) -> list[int]:
        start = self.tries[0] if self.tries else _DONE
        states = self._closure([(0, start)])
        for position, token in enumerate(generated):
            if any(part >= len(self.tries) for part, _ in states) and self.free_tail:
                return self.everything  # the free tail: anything, until EOS or the length cap
            following = [(part, node.children[token]) for part, node in states if token in node.children]
            if not following:
                return self.eos  # off the pattern (cannot happen under this constraint): stop
            states = self._closure(following)
        allowed: set[int] = set()
        for part, node in states:
            if part >= len(self.tries):
                if self.free_tail:
                    return self.everything
                allowed.update(self.eos)
            else:
                allowed.update(node.children)
        return sorted(allowed) or self.eos


_DONE = _Node()
_DONE.terminal = False


def compile_pattern(pattern: Pattern, encode: Callable[[str], list[int]], eos: Sequence[int],
                    vocab_size: int) -> CompiledPattern:
    """``encode``: text -> token ids without special tokens (the tokenizer's own)."""
    tries = [_trie([encode(option) for option in part]) for part in pattern.parts]
    return CompiledPattern(tries, pattern.free_tail, sorted({int(e) for e in eos}), vocab_size)


def prefix_function(compiled: CompiledPattern, prompt_length: int) -> Callable[[int, Any], list[int]]:
    """``generate``'s ``prefix_allowed_tokens_fn`` for prompts padded to ``prompt_length`` tokens."""

    def allowed(_batch: int, input_ids: Any) -> list[int]:
        return compiled.allowed(input_ids[prompt_length:].tolist())

    return allowed
