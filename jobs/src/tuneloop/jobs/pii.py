"""PII scrubbing: find e-mail addresses, phone numbers, payment card numbers (Luhn-checked), IBANs
(mod-97-checked) and national-ID-like numbers in text, replace each with a placeholder such as
`[EMAIL]`, and count the redactions by kind.

Checksums keep false positives down: an invoice total or an order number of the right length is not
a card unless its digits pass Luhn, and a string shaped like an IBAN is only one if mod 97 gives 1.
Kinds are scanned in a fixed order (most specific first) so that a card number is never half-eaten
by the phone pattern. Pure functions; the tables in tests/unit/jobs/test_pii.py are the spec.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

PLACEHOLDERS = {
    "email": "[EMAIL]",
    "iban": "[IBAN]",
    "card": "[CARD]",
    "national_id": "[NATIONAL_ID]",
    "phone": "[PHONE]",
}

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
# Two letters, two check digits, then 11-30 alphanumerics, optionally grouped by spaces in fours.
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
# 13-19 digits, optionally split by single spaces or dashes.
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
# US SSN (AAA-GG-SSSS), UK NINO (AB 12 34 56 C) — the shapes a national ID takes in free text.
_NATIONAL_ID = re.compile(
    r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b"
    r"|\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"
)
# International (+CC ...) or a national number with a trunk 0 / area code in parentheses; 8-15 digits.
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?|\(\d{2,5}\)[ .-]?|0)\d{1,4}(?:[ .-]?\d{2,4}){1,4}(?!\w)"
)


def luhn_valid(digits: str) -> bool:
    """True when the digit string passes the Luhn checksum (payment cards)."""
    if not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_valid(text: str) -> bool:
    """True when the IBAN (spaces allowed) passes the ISO 13616 mod-97 check."""
    compact = text.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34 or not compact.isalnum():
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def _phone_ok(match: str) -> bool:
    return 8 <= len(_digits(match)) <= 15


@dataclass(frozen=True)
class _Rule:
    kind: str
    pattern: re.Pattern[str]
    accept: Callable[[str], bool]


RULES: tuple[_Rule, ...] = (
    _Rule("email", _EMAIL, lambda m: True),
    _Rule("iban", _IBAN, iban_valid),
    _Rule("card", _CARD, lambda m: luhn_valid(_digits(m))),
    _Rule("national_id", _NATIONAL_ID, lambda m: True),
    _Rule("phone", _PHONE, _phone_ok),
)


def scrub(text: str) -> tuple[str, Counter[str]]:
    """Return `text` with PII replaced by placeholders, and the number of redactions per kind."""
    counts: Counter[str] = Counter()
    for rule in RULES:

        def replace(match: re.Match[str], rule: _Rule = rule) -> str:
            if not rule.accept(match.group(0)):
                return match.group(0)
            counts[rule.kind] += 1
            return PLACEHOLDERS[rule.kind]

        text = rule.pattern.sub(replace, text)
    return text, counts
