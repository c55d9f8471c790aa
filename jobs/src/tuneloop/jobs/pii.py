"""PII scrubbing: find e-mail addresses, phone numbers, payment card numbers (Luhn-checked), IBANs
(mod-97-checked), IP and crypto wallet addresses, national-ID-like numbers and, when a spaCy model is
installed, person names in text; replace each with a placeholder such as `[EMAIL]`, and count the
redactions by kind. Training data preparation, the serving traffic log and the monitors' feedback set all
call `scrub()`, so one scrubber serves them all.

Two engines, the first that is installed unless TUNELOOP_PII_ENGINE names one (`presidio` or `regex`):

- `presidio` (the `pii` extra, tuneloop.jobs.pii_presidio): Presidio's maintained pattern recognizers and
  the `phonenumbers` library, person names through Presidio's spaCy recognizer when a spaCy model is
  installed (an optional extra: spaCy models are not on PyPI).
- `regex`: the standard-library fallback below (no IP, crypto or name detection), kept so the job, the
  Serve application and the monitors run without the extra.

Checksums keep false positives down: an invoice total or an order number of the right length is not
a card unless its digits pass Luhn. IBANs are different: a mistyped account number is still personal
data, so a string with an IBAN country code and exactly that country's IBAN length is redacted even when
mod 97 fails (counted as `iban_unverified`) by both engines; before, the phone pattern took its tail and
left `DE89 3704 [PHONE]`. The registry's lengths keep product codes of other shapes out.
The regex engine scans kinds in a fixed order (most specific first) so that a card number is never
half-eaten by the phone pattern. The tables in tests/unit/jobs/test_pii*.py are the spec.
"""

from __future__ import annotations

import os
import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

PLACEHOLDERS = {
    "email": "[EMAIL]",
    "iban": "[IBAN]",
    "iban_unverified": "[IBAN]",
    "card": "[CARD]",
    "national_id": "[NATIONAL_ID]",
    "phone": "[PHONE]",
    "ip": "[IP]",
    "crypto": "[CRYPTO]",
    "person": "[PERSON]",
}

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
# Two letters, two check digits, then 11-30 alphanumerics, optionally grouped by spaces in fours.
IBAN_PATTERN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
# 13-19 digits, optionally split by single spaces or dashes.
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
# US SSN (AAA-GG-SSSS), UK NINO (AB 12 34 56 C) — the shapes a national ID takes in free text.
NATIONAL_ID_PATTERN = re.compile(
    r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b"
    r"|\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"
)
# International (+CC ...) or a national number with a trunk 0 / area code in parentheses; 8-15 digits.
PHONE_PATTERN = re.compile(
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


# IBAN length per country (SWIFT IBAN registry).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "BY": 28,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19,
    "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}


def iban_shaped(text: str) -> bool:
    """True when the string has a known IBAN country code and that country's IBAN length (checksum not
    checked): what a mistyped IBAN still looks like."""
    compact = text.replace(" ", "").upper()
    return compact.isalnum() and IBAN_LENGTHS.get(compact[:2]) == len(compact)


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


_DATE = re.compile(r"\d{1,2}([./-])\d{1,2}\1\d{2,4}|\d{4}([./-])\d{1,2}\2\d{1,2}")


def phone_ok(match: str) -> bool:
    """8-15 digits, and not a date (07.08.2026) or a bare zero-padded number (order 03587291): a national
    number written without separators needs 10 digits or more."""
    digits = _digits(match)
    if not 8 <= len(digits) <= 15 or _DATE.fullmatch(match):
        return False
    return not (match.isdigit() and len(digits) < 10)


@dataclass(frozen=True)
class _Rule:
    kind: str
    pattern: re.Pattern[str]
    accept: Callable[[str], bool]


RULES: tuple[_Rule, ...] = (
    _Rule("email", _EMAIL, lambda m: True),
    _Rule("iban", IBAN_PATTERN, iban_valid),
    _Rule("iban_unverified", IBAN_PATTERN, iban_shaped),
    _Rule("card", _CARD, lambda m: luhn_valid(_digits(m))),
    _Rule("national_id", NATIONAL_ID_PATTERN, lambda m: True),
    _Rule("phone", PHONE_PATTERN, phone_ok),
)


def scrub_regex(text: str) -> tuple[str, Counter[str]]:
    """The standard-library engine: `text` with PII replaced by placeholders, and the redactions per kind."""
    counts: Counter[str] = Counter()
    for rule in RULES:

        def replace(match: re.Match[str], rule: _Rule = rule) -> str:
            if not rule.accept(match.group(0)):
                return match.group(0)
            counts[rule.kind] += 1
            return PLACEHOLDERS[rule.kind]

        text = rule.pattern.sub(replace, text)
    return text, counts


class Scrubber(Protocol):
    engine: str  # "presidio" or "regex"
    names: str  # "on: spaCy model …" or "off: why"

    def scrub(self, text: str) -> tuple[str, Counter[str]]: ...


class RegexScrubber:
    engine = "regex"
    names = "off: the built-in regex scrubber does not detect names (install tuneloop[pii] and a spaCy model)"

    def scrub(self, text: str) -> tuple[str, Counter[str]]:
        return scrub_regex(text)


ENGINE_ENV = "TUNELOOP_PII_ENGINE"
ENGINES = ("presidio", "regex")
_lock = threading.Lock()
_scrubber: Scrubber | None = None


def build_scrubber(engine: str | None = None) -> Scrubber:
    """A scrubber of the named engine; None (or "auto") takes TUNELOOP_PII_ENGINE, else presidio when the
    `pii` extra is installed, else regex. Naming presidio without the extra is an error, not a fallback."""
    engine = (engine or os.environ.get(ENGINE_ENV) or "auto").strip().lower()
    if engine not in (*ENGINES, "auto"):
        raise ValueError(f"{ENGINE_ENV}={engine!r}: expected one of presidio, regex, auto")
    if engine == "regex":
        return RegexScrubber()
    try:
        from tuneloop.jobs import pii_presidio
    except ImportError as e:
        if engine == "presidio":
            raise ImportError(f"the presidio PII engine needs the pii extra (pip install 'tuneloop[pii]'): {e}") from e
        return RegexScrubber()
    return pii_presidio.PresidioScrubber()


def scrubber() -> Scrubber:
    """The process's scrubber, built once (loading Presidio takes seconds; a spaCy model longer)."""
    global _scrubber
    with _lock:
        if _scrubber is None:
            _scrubber = build_scrubber()
        return _scrubber


def scrub(text: str) -> tuple[str, Counter[str]]:
    """Return `text` with PII replaced by placeholders, and the number of redactions per kind."""
    return scrubber().scrub(text)
