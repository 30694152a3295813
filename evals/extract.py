"""Answer extraction and matching rules for generation accuracy.

A generated answer is only as comparable as the rule that reads it, so the rule is a named, recorded part of
every result. Rules:

- ``"gsm8k"``: the number after the last ``####`` (GSM8K's answer line); nothing if there is no ``####``
  (strict, like lm-eval's ``strict-match``: a model that never learned the format gets no credit).
- ``"boxed"``: the contents of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces matched, LaTeX spacing
  dropped (MATH's convention).
- ``"last_number"``: the last number in the text (lm-eval's ``flexible-extract``).
- ``"exact"``: the whole text with whitespace collapsed and trimmed.

Numbers are canonicalised before comparison: thousands separators, ``$`` and a trailing ``.`` go, and ``7.0``
equals ``7``. A gold answer goes through the same canonicalisation, so ``"1,000"`` and ``"1000"`` match; a
gold string that itself contains the rule's marker (a full GSM8K solution ending in ``#### 72``) is extracted
first.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Literal

Rule = Literal["gsm8k", "boxed", "last_number", "exact"]
RULES: tuple[Rule, ...] = ("gsm8k", "boxed", "last_number", "exact")

# A minus sign counts only when it does not follow a word character or digit: "3-5" is 3 and 5, not 3 and -5.
_NUMBER = r"(?:(?<![\w.])-)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|(?:(?<![\w.])-)?(?<![\w.])\.\d+"
_NUMBER_RE = re.compile(_NUMBER)
_GSM8K_RE = re.compile(r"####\s*\$?\s*(" + _NUMBER.replace("(?<![\\w.])", "") + ")")
_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_LATEX_NOISE = re.compile(r"\\\$|\\[!,;:]|\\left|\\right|\\displaystyle|\^\{?\\circ\}?|\\%|\$")


def extract_answer(text: str, rule: Rule) -> str | None:
    """The canonical answer ``rule`` reads from ``text``; None when the text holds no answer of that form."""
    if rule == "gsm8k":
        found = _GSM8K_RE.findall(text)
        return canonical_number(found[-1]) if found else None
    if rule == "boxed":
        inner = last_boxed(text)
        return None if inner is None else _canonical_latex(inner)
    if rule == "last_number":
        found = _NUMBER_RE.findall(text)
        return canonical_number(found[-1]) if found else None
    if rule == "exact":
        return normalise_whitespace(text)
    raise ValueError(f"unknown answer rule {rule!r}; choose one of {', '.join(RULES)}")


def canonical_gold(gold: str, rule: Rule) -> str:
    """The reference answer in the same canonical form ``extract_answer`` produces for ``rule``."""
    if rule == "exact":
        return normalise_whitespace(gold)
    marked = extract_answer(gold, rule) if rule in ("gsm8k", "boxed") else None
    if marked is not None:
        return marked
    if rule == "boxed":
        return _canonical_latex(gold)
    number = canonical_number(gold.strip())
    return number if _is_number(number) else normalise_whitespace(gold)


def is_correct(pred: str | None, gold: str, rule: Rule) -> bool:
    """Whether an extracted prediction equals the canonical gold answer (an unparsed one never does)."""
    return pred is not None and pred == canonical_gold(gold, rule)


def normalise_whitespace(text: str) -> str:
    """Runs of whitespace collapsed to one space, ends trimmed."""
    return " ".join(text.split())


def canonical_number(text: str) -> str:
    """``"1,000.50"`` -> ``"1000.5"``, ``"$7."`` -> ``"7"``, ``"-0"`` -> ``"0"``; other text stays as is."""
    cleaned = text.strip().replace(",", "").replace("$", "").rstrip(".").strip()
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return text.strip()
    if not value.is_finite():
        return text.strip()
    out = format(value.normalize(), "f")
    return "0" if out in ("-0", "0") else out


def last_boxed(text: str) -> str | None:
    """Contents of the last ``\\boxed{...}`` with nested braces matched; None if absent or unclosed."""
    starts = [m.end() for m in _BOX_RE.finditer(text)]
    if not starts:
        return None
    start = starts[-1]
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i]
    return None


def _canonical_latex(text: str) -> str:
    s = _LATEX_NOISE.sub("", text)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\\text\{\s*([^{}]*?)\s*\}", r"\1", s)
    s = "".join(s.split()).rstrip(".")
    number = canonical_number(s)
    return number if _is_number(number) else s


def _is_number(text: str) -> bool:
    try:
        return Decimal(text).is_finite()
    except InvalidOperation:
        return False
