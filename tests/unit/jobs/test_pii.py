"""PII scrubbing as a table: what is redacted, what is left alone, and the checksums behind cards and IBANs."""

from __future__ import annotations

import pytest

from tuneloop.jobs import pii

CASES = [
    # (name, text, expected text, expected counts)
    ("email", "mail bob.smith+x@mail.example.co.uk now", "mail [EMAIL] now", {"email": 1}),
    ("two emails", "a@b.io, c.d@e-f.org", "[EMAIL], [EMAIL]", {"email": 2}),
    ("card luhn-valid spaced", "card 4111 1111 1111 1111 ok", "card [CARD] ok", {"card": 1}),
    ("card luhn-valid dashed", "pay 5500-0000-0000-0004.", "pay [CARD].", {"card": 1}),
    ("card luhn-valid compact amex", "amex 378282246310005", "amex [CARD]", {"card": 1}),
    ("card luhn-invalid kept", "card 4111 1111 1111 1112 no", "card 4111 1111 1111 1112 no", {}),
    ("iban valid grouped", "iban DE89 3704 0044 0532 0130 00 x", "iban [IBAN] x", {"iban": 1}),
    ("iban valid compact", "GB82WEST12345698765432", "[IBAN]", {"iban": 1}),
    # a mistyped account number is still personal data (#12): the whole string goes, counted apart
    ("iban bad checksum redacted", "iban DE89370400440532013001 bad", "iban [IBAN] bad", {"iban_unverified": 1}),
    ("iban bad checksum grouped", "Contact: DE89 3704 0044 0532 0130 01", "Contact: [IBAN]", {"iban_unverified": 1}),
    ("iban-like code of another length kept", "part DE12ABCDEFGHIJK9 ok", "part DE12ABCDEFGHIJK9 ok", {}),
    ("unknown country kept", "ref ZZ89370400440532013000", "ref ZZ89370400440532013000", {}),
    ("us ssn", "ssn 123-45-6789", "ssn [NATIONAL_ID]", {"national_id": 1}),
    ("ssn impossible area kept", "id 666-12-3456", "id 666-12-3456", {}),
    ("uk nino", "nino AB 12 34 56 C", "nino [NATIONAL_ID]", {"national_id": 1}),
    ("phone international", "call +44 20 7946 0958.", "call [PHONE].", {"phone": 1}),
    ("phone us parentheses", "call (555) 123-4567", "call [PHONE]", {"phone": 1}),
    ("phone national trunk 0", "call 020 7946 0958", "call [PHONE]", {"phone": 1}),
    ("amount and date kept", "Total: 6900.05 EUR on 2026-09-16 INV-00012",
     "Total: 6900.05 EUR on 2026-09-16 INV-00012", {}),
    ("order number kept", "order 12345678", "order 12345678", {}),
    ("mixed", "x@y.com or +1 415 555 2671, card 4242424242424242",
     "[EMAIL] or [PHONE], card [CARD]", {"email": 1, "phone": 1, "card": 1}),
]


@pytest.mark.parametrize(("text", "expected", "counts"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_scrub(text: str, expected: str, counts: dict[str, int]) -> None:
    out, found = pii.scrub(text)
    assert out == expected
    assert dict(found) == counts


@pytest.mark.parametrize(("digits", "valid"), [
    ("4111111111111111", True), ("4111111111111112", False), ("79927398713", True), ("79927398710", False),
    ("0", True), ("12a4", False),
])
def test_luhn(digits: str, valid: bool) -> None:
    assert pii.luhn_valid(digits) is valid


@pytest.mark.parametrize(("iban", "valid"), [
    ("DE89 3704 0044 0532 0130 00", True), ("GB82WEST12345698765432", True),
    ("GB82WEST12345698765433", False), ("DE89", False),
])
def test_iban(iban: str, valid: bool) -> None:
    assert pii.iban_valid(iban) is valid
