"""Recall and precision of the PII scrubber, per engine and per kind, on a generated labelled set: every
pattern kind planted in running text (cards, IBANs and crypto addresses with valid checksums, IBANs with
broken ones too), and texts full of numbers that are not personal data (invoice ids, totals, dates,
order and part numbers, times, card numbers and wallet addresses whose checksums fail). Person names in
running text are planted too: without a spaCy model neither engine detects them, and the scrubber says so."""

from __future__ import annotations

import hashlib
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
             "Temperature {a}.{b} C, pressure {n} Pa, ratio 1:{m}.",
             "Reference {card} was rejected (checksum), retry {m}.", "Wallet field held {wallet} (bad checksum).")
NAMES = ("Anna Schmidt", "John Miller", "Li Wei", "Maria Garcia", "Oliver Brown", "Fatima Khan")


def _luhn_complete(body: str) -> str:
    for check in string.digits:
        if pii.luhn_valid(body + check):
            return body + check
    raise AssertionError(body)


# Letters the country's BBAN format requires first (bank code, CIN); the rest are digits.
IBAN_LETTERS = {"GB": 4, "NL": 4, "IT": 1}


def _iban(rng: random.Random, country: str, valid: bool) -> str:
    letters = IBAN_LETTERS.get(country, 0)
    bban = ("".join(rng.choice(string.ascii_uppercase) for _ in range(letters))
            + "".join(rng.choice(string.digits) for _ in range(pii.IBAN_LENGTHS[country] - 4 - letters)))
    number = int("".join(str(int(ch, 36)) for ch in bban + country + "00"))
    check = 98 - number % 97
    iban = f"{country}{check:02d}{bban}"
    if not valid:  # one mistyped digit of the account number
        i = rng.randrange(4 + letters, len(iban))
        iban = iban[:i] + str((int(iban[i]) + 1 + rng.randrange(8)) % 10) + iban[i + 1:]
    assert pii.iban_valid(iban) is valid
    return iban if rng.random() < 0.5 else " ".join(iban[i: i + 4] for i in range(0, len(iban), 4))


B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _wallet(rng: random.Random, valid: bool = True) -> str:
    """A Bitcoin P2PKH or P2SH address (base58check), its checksum broken when not `valid`."""
    payload = bytes([rng.choice([0, 5])]) + rng.randbytes(20)
    check = hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]
    if not valid:
        check = bytes([check[0] ^ 1]) + check[1:]
    n, out = int.from_bytes(payload + check, "big"), ""
    while n:
        n, r = divmod(n, 58)
        out = B58[r] + out
    return "1" * (len(payload) - len(payload.lstrip(b"\0"))) + out


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
    if kind == "ip":
        if rng.random() < 0.7:
            return ".".join(str(rng.randrange(1, 255)) for _ in range(4))
        return ":".join(f"{rng.randrange(1, 0xFFFF):x}" for _ in range(8))
    if kind == "crypto":
        return _wallet(rng)
    if kind == "person":
        return rng.choice(NAMES)
    raise AssertionError(kind)


KINDS = ("email", "phone", "card", "iban", "iban_unverified", "national_id", "ip", "crypto", "person")
# What each engine claims to find; person names only with a spaCy model (none can be installed here).
ENGINE_KINDS = {"regex": ("email", "phone", "card", "iban", "iban_unverified", "national_id"),
                "presidio": ("email", "phone", "card", "iban", "iban_unverified", "national_id", "ip", "crypto")}
PER_KIND = 200


def labelled_set(seed: int = 12):
    rng = random.Random(seed)
    positives = [(kind, value, rng.choice(SENTENCES).format(x=value, n=rng.randrange(100000)))
                 for kind in KINDS for value in (planted(rng, kind) for _ in range(PER_KIND))]
    negatives = [rng.choice(NEGATIVES).format(n=rng.randrange(10**8), a=rng.randrange(1, 9999), b=rng.randrange(100),
                                              m=rng.randrange(1, 13), d=rng.randrange(1, 29),
                                              card=_luhn_broken(planted(rng, "card")), wallet=_wallet(rng, False))
                 for _ in range(PER_KIND * 2)]
    return positives, negatives


def _luhn_broken(card: str) -> str:
    last = card[-1]
    return card[:-1] + str((int(last) + 1) % 10)


def measure(scrubber: pii.Scrubber, kinds: tuple[str, ...]) -> tuple[dict[str, float], float, list[str]]:
    """Recall per kind of `kinds` and precision (planted values of other kinds are neither)."""
    positives, negatives = labelled_set()
    positives = [p for p in positives if p[0] in kinds]
    found: dict[str, int] = dict.fromkeys(kinds, 0)
    false_positives, misses = 0, []
    for kind, value, text in positives:
        out, counts = scrubber.scrub(text)
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
        out, counts = scrubber.scrub(text)
        false_positives += sum(counts.values())
        if counts and len(misses) < 10:
            misses.append(f"false positive: {text!r} -> {out!r}")
    recall = {k: found[k] / PER_KIND for k in kinds}
    true_positives = sum(found.values())
    return recall, true_positives / (true_positives + false_positives), misses


@pytest.fixture(scope="module", params=list(ENGINE_KINDS))
def engine(request: pytest.FixtureRequest) -> pii.Scrubber:
    return pii.build_scrubber(request.param)


def test_recall_and_precision_on_the_labelled_set(engine: pii.Scrubber) -> None:
    recall, precision, misses = measure(engine, ENGINE_KINDS[engine.engine])
    print(f"PII scrubber ({engine.engine}) on {PER_KIND} planted values per kind and {2 * PER_KIND} clean texts: "
          f"recall {recall}, precision {precision:.4f}")
    assert all(r >= 0.99 for r in recall.values()), (recall, misses)
    assert precision >= 0.99, (precision, misses)


def test_names_stay_and_the_scrubber_says_so_without_a_spacy_model(engine: pii.Scrubber) -> None:
    """No spaCy model is installed here: a name in running text is left, and `names` says detection is off."""
    positives, _ = labelled_set()
    names = [(value, text) for kind, value, text in positives if kind == "person"]
    assert engine.names.startswith("off: ")
    assert all(value in engine.scrub(text)[0] for value, text in names)


@pytest.mark.parametrize("kind", KINDS)
def test_every_shape_of_the_set_is_generated(kind: str) -> None:
    positives, _ = labelled_set()
    assert sum(1 for k, _, _ in positives if k == kind) == PER_KIND
