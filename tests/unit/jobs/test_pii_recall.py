"""Recall and precision of the PII scrubber on a generated labelled set: every pattern kind planted in
running text (cards and IBANs with valid checksums, IBANs with broken ones too), and texts full of
numbers that are not personal data (invoice ids, totals, dates, order and part numbers, times)."""

from __future__ import annotations

import random
import string

import pytest

from tuneloop.jobs import pii

SENTENCES = ("Please contact {x} about invoice INV-{n:05d}.", "{x}", "Customer wrote: reach me at {x} before 5 pm.",
             "Refund to {x}, total 1234.56 EUR, due 2026-03-14.", "Details ({x}) were in the ticket #{n}.")
NEGATIVES = ("Invoice INV-{n:05d} totals {a}.{b:02d} EUR, due 2026-{m:02d}-{d:02d}.",
             "Order {n:08d} shipped at 14:{b:02d}; 3 of {a} items, {b}% off.",
             "Part AB-{n:06d}-X rev {m}, batch {a}/{b}, version 2.{m}.{d}.",
             "Meeting on {d:02d}.{m:02d}.2026 in room {a}, build {n}.",
             "Temperature {a}.{b} C, pressure {n} Pa, ratio 1:{m}.")


def _luhn_complete(body: str) -> str:
    for check in string.digits:
        if pii.luhn_valid(body + check):
            return body + check
    raise AssertionError(body)


def _iban(rng: random.Random, country: str, valid: bool) -> str:
    bban = "".join(rng.choice(string.digits) for _ in range(pii.IBAN_LENGTHS[country] - 4))
    number = int("".join(str(int(ch, 36)) for ch in bban + country + "00"))
    check = 98 - number % 97
    iban = f"{country}{check:02d}{bban}"
    if not valid:  # one mistyped digit of the account number
        i = rng.randrange(4, len(iban))
        iban = iban[:i] + str((int(iban[i]) + 1 + rng.randrange(8)) % 10) + iban[i + 1:]
    assert pii.iban_valid(iban) is valid
    return iban if rng.random() < 0.5 else " ".join(iban[i: i + 4] for i in range(0, len(iban), 4))


def planted(rng: random.Random, kind: str) -> str:
    """One value of `kind` in one of the shapes it takes in free text."""
    if kind == "email":
        user = rng.choice(["anna", "j.smith", "li_wei", "oneil", "m-k"]) + str(rng.randrange(1000))
        return f"{user}@{rng.choice(['example.com', 'mail.co.uk', 'firma.de', 'corp.example.org'])}"
    if kind == "phone":
        d = lambda k: "".join(rng.choice(string.digits) for _ in range(k))  # noqa: E731
        return rng.choice([f"+44 20 {d(4)} {d(4)}", f"+49 30 {d(7)}", f"+1 (415) {d(3)}-{d(4)}",
                           f"030 {d(4)} {d(4)}", f"(020) {d(4)} {d(4)}", f"+33 1 {d(2)} {d(2)} {d(2)} {d(2)}",
                           f"0{d(3)}-{d(7)}"])
    if kind == "card":
        prefix = rng.choice(["4", "51", "55", "37"])
        length = 15 if prefix == "37" else 16
        number = _luhn_complete(prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1)))
        sep = rng.choice(["", " ", "-"])
        return sep.join(number[i: i + 4] for i in range(0, len(number), 4)) if sep else number
    if kind in ("iban", "iban_unverified"):
        return _iban(rng, rng.choice(["DE", "GB", "FR", "NL", "ES", "IT", "CH", "AT"]), valid=kind == "iban")
    if kind == "national_id":
        return rng.choice([f"{rng.randrange(1, 665):03d}-{rng.randrange(1, 99):02d}-{rng.randrange(1, 9999):04d}",
                           f"AB {rng.randrange(10, 99)} {rng.randrange(10, 99)} {rng.randrange(10, 99)} C"])
    raise AssertionError(kind)


KINDS = ("email", "phone", "card", "iban", "iban_unverified", "national_id")
PER_KIND = 200


def labelled_set(seed: int = 12):
    rng = random.Random(seed)
    positives = [(kind, value, rng.choice(SENTENCES).format(x=value, n=rng.randrange(100000)))
                 for kind in KINDS for value in (planted(rng, kind) for _ in range(PER_KIND))]
    negatives = [rng.choice(NEGATIVES).format(n=rng.randrange(10**8), a=rng.randrange(1, 9999), b=rng.randrange(100),
                                              m=rng.randrange(1, 13), d=rng.randrange(1, 29))
                 for _ in range(PER_KIND * 2)]
    return positives, negatives


def measure() -> tuple[dict[str, float], float, list[str]]:
    positives, negatives = labelled_set()
    found: dict[str, int] = dict.fromkeys(KINDS, 0)
    false_positives, misses = 0, []
    for kind, value, text in positives:
        out, counts = pii.scrub(text)
        redacted = value not in out and pii.PLACEHOLDERS[kind] in out
        # Nothing of the value may survive: no digit group of 3 or more left from it.
        groups = [g for g in value.replace("-", " ").replace("(", " ").replace(")", " ").split() if len(g) >= 3]
        redacted = redacted and not any(g in out for g in groups if g.strip(string.punctuation) not in text.replace(
            value, ""))
        if redacted:
            found[kind] += 1
        elif len(misses) < 10:
            misses.append(f"{kind}: {text!r} -> {out!r}")
        false_positives += max(0, sum(counts.values()) - 1)
    for text in negatives:
        _, counts = pii.scrub(text)
        false_positives += sum(counts.values())
    recall = {k: found[k] / PER_KIND for k in KINDS}
    true_positives = sum(found.values())
    return recall, true_positives / (true_positives + false_positives), misses


def test_recall_and_precision_on_the_labelled_set() -> None:
    recall, precision, misses = measure()
    print(f"PII scrubber on {PER_KIND} planted values per kind and {2 * PER_KIND} clean texts: "
          f"recall {recall}, precision {precision:.4f}")
    assert all(r >= 0.99 for r in recall.values()), (recall, misses)
    assert precision >= 0.99, (precision, misses)


@pytest.mark.parametrize("kind", KINDS)
def test_every_shape_of_the_set_is_generated(kind: str) -> None:
    positives, _ = labelled_set()
    assert sum(1 for k, _, _ in positives if k == kind) == PER_KIND
