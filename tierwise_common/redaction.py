"""Personal data taken out of text before it is stored: e-mail addresses, phone numbers,
payment card numbers and IBANs become ``[EMAIL]``, ``[PHONE]``, ``[CARD]`` and ``[IBAN]``.

Captured traffic becomes training data and lives for weeks; the people who wrote it did not
agree to that for their contact or payment details. Card numbers must pass the Luhn check and
IBANs the ISO 13616 mod-97 check, so order numbers, amounts, dates and reference codes that
merely look numeric survive (a student trained on them still learns the task). Phone numbers
have no checksum: a run of 7-15 digits that is written like a phone number (a leading ``+``
or ``00``, a parenthesised area code, or digit groups separated by spaces, dots or dashes)
is taken for one unless it is a date or a time.

Standard library only: the gateway, distill and the flywheel share it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

EMAIL, PHONE, CARD, IBAN = "[EMAIL]", "[PHONE]", "[CARD]", "[IBAN]"

_EMAIL_RE = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
# Country code, two check digits, then 11-30 alphanumerics, optionally in groups of four.
_IBAN_RE = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}\b")
# 13-19 digits, optionally grouped by single spaces or dashes.
_CARD_RE = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
# A phone-looking run: optional +/00 prefix, then digits, spaces, dots, dashes and parentheses,
# ending on a digit; ``_phone`` then checks the digit count and the shape.
_PHONE_RE = re.compile(r"(?<![\w+])(?:\+|00)?\(?\d[\d ().-]{5,22}\d(?!\w)")
_DATE_OR_TIME_RE = re.compile(r"^\d{1,4}[./-]\d{1,2}[./-]\d{1,4}$|^\d{1,2}[.:]\d{2}$")


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum every payment card number carries."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(candidate: str) -> bool:
    """ISO 13616: move the first four characters to the end, letters to numbers, mod 97 == 1."""
    compact = candidate.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    try:
        number = "".join(str(int(ch, 36)) for ch in moved)
    except ValueError:
        return False
    return int(number) % 97 == 1


def _card(match: re.Match[str]) -> str | None:
    digits = re.sub(r"\D", "", match.group())
    return CARD if 13 <= len(digits) <= 19 and luhn_ok(digits) else None


def _iban(match: re.Match[str]) -> str | None:
    return IBAN if iban_ok(match.group()) else None


def _phone(match: re.Match[str]) -> str | None:
    text = match.group()
    digits = re.sub(r"\D", "", text)
    if not 7 <= len(digits) <= 15 or _DATE_OR_TIME_RE.match(text.strip()):
        return None
    has_prefix = text.startswith(("+", "00", "("))
    groups = [g for g in re.split(r"[ .()-]+", text) if g]
    if not has_prefix and len(groups[0]) <= 3 and all(len(g) == 3 for g in groups[1:]):
        return None  # thousands groups: "1 000 000", "12.500.000"
    # Without a country prefix, ask for a national-looking shape: three or more groups, or
    # a first group of 2-5 digits starting with 0 (trunk prefix), so "2024 1500" stays.
    if not has_prefix and len(groups) < 3 and not (groups[0].startswith("0") and len(digits) >= 9):
        return None
    return PHONE


_RULES: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str | None]], ...] = (
    (_EMAIL_RE, lambda m: EMAIL),
    (_IBAN_RE, _iban),
    (_CARD_RE, _card),
    (_PHONE_RE, _phone),
)


def redact(text: str) -> tuple[str, int]:
    """``text`` with personal data replaced by placeholders, and how many were replaced.

    Rules run in order (e-mail, IBAN, card, phone), each on the output of the one before, so
    a card number is not also counted as a phone number.
    """
    count = 0
    for pattern, replace in _RULES:
        def substitute(match: re.Match[str], replace=replace) -> str:
            nonlocal count
            replacement = replace(match)
            if replacement is None:
                return match.group()
            count += 1
            return replacement

        text = pattern.sub(substitute, text)
    return text, count


def redact_json(value: Any) -> tuple[Any, int]:
    """Every string inside a JSON value (an OpenAI request or response) redacted; keys kept.

    Returns a new value and the number of replacements; the input is not changed.
    """
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        total, out = 0, []
        for item in value:
            clean, n = redact_json(item)
            out.append(clean)
            total += n
        return out, total
    if isinstance(value, dict):
        total, clean_dict = 0, {}
        for key, item in value.items():
            clean, n = redact_json(item)
            clean_dict[key] = clean
            total += n
        return clean_dict, total
    return value, 0
