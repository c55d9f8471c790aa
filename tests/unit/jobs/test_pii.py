"""PII scrubbing as a table, for both engines (Presidio's recognizers and the regex fallback): what is
redacted, what is left alone, and the checksums behind cards and IBANs; then what only the Presidio engine
does (IP and crypto addresses, person names through a spaCy pipeline, no network), and how the engine is
chosen."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


@pytest.fixture(scope="module", params=pii.ENGINES)
def engine(request: pytest.FixtureRequest) -> pii.Scrubber:
    return pii.build_scrubber(request.param)


@pytest.mark.parametrize(("text", "expected", "counts"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_scrub(engine: pii.Scrubber, text: str, expected: str, counts: dict[str, int]) -> None:
    out, found = engine.scrub(text)
    assert out == expected
    assert dict(found) == counts


@pytest.fixture(scope="module")
def presidio() -> pii.Scrubber:
    return pii.build_scrubber("presidio")


PRESIDIO_CASES = [
    ("ipv4", "from 192.168.10.42 at noon", "from [IP] at noon", {"ip": 1}),
    ("ipv6", "host 2001:db8:85a3:0:0:8a2e:370:7334 down", "host [IP] down", {"ip": 1}),
    ("bitcoin p2pkh", "btc 1BoatSLRHtKNngkdXEeobR76b53LETtpyT thanks", "btc [CRYPTO] thanks", {"crypto": 1}),
    ("bitcoin bad checksum kept", "btc 1BoatSLRHtKNngkdXEeobR76b53LETtpyU x",
     "btc 1BoatSLRHtKNngkdXEeobR76b53LETtpyU x", {}),
    # mod 97 passes but GB wants letters for the bank code: Presidio refuses it, our IBAN-shaped rule does not
    ("iban checksum ok, country format not", "GB29 1234 5612 3456 7890 12", "[IBAN]", {"iban_unverified": 1}),
    ("card digits inside an iban", "IT60 X054 2811 1010 0000 0123 456", "[IBAN]", {"iban": 1}),
    ("phone in an unallocated range", "call +44 20 5723 4364", "call [PHONE]", {"phone": 1}),
    ("date is not a phone", "Meeting on 07.08.2026 in room 4611", "Meeting on 07.08.2026 in room 4611", {}),
]


@pytest.mark.parametrize(("text", "expected", "counts"), [c[1:] for c in PRESIDIO_CASES],
                         ids=[c[0] for c in PRESIDIO_CASES])
def test_scrub_presidio(presidio: pii.Scrubber, text: str, expected: str, counts: dict[str, int]) -> None:
    out, found = presidio.scrub(text)
    assert out == expected
    assert dict(found) == counts


NO_NETWORK = """
import socket, sys
attempts = []
def refuse(*args, **kwargs):
    attempts.append(args)
    raise OSError("network disabled in this test")
socket.getaddrinfo = refuse
socket.socket.connect = refuse
from tuneloop.jobs import pii
out, _ = pii.build_scrubber("presidio").scrub("mail anna@firma.de or li@mail.co.uk, call +44 20 7946 0958")
print(out)
print("network attempts:", len(attempts))
"""


def test_presidio_scrubber_never_touches_the_network(tmp_path: Path) -> None:
    """Presidio's stock EmailRecognizer validates domains with tldextract's default extractor, which fetches
    the Public Suffix List over HTTP on first use (then caches it on disk): a fresh Serve replica or training
    pod must not. A fresh process with an empty tldextract cache and sockets refused."""
    env = {**os.environ, "TLDEXTRACT_CACHE": str(tmp_path / "tldextract"), "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", NO_NETWORK], env=env, capture_output=True, text=True, timeout=300,
                          check=True)
    assert done.stdout.splitlines() == ["mail [EMAIL] or [EMAIL], call [PHONE]", "network attempts: 0"], done.stderr


def test_person_names_through_presidio_with_a_spacy_pipeline(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """No statistical spaCy model can be installed here (they are not on PyPI), so a real spaCy pipeline
    with an entity ruler stands in for one: it proves the path a model takes — TUNELOOP_PII_SPACY_MODEL,
    Presidio's SpacyNlpEngine and SpacyRecognizer, the PERSON spans — not how well a model finds names."""
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns([{"label": "PERSON", "pattern": "Anna Schmidt"},
                                               {"label": "ORG", "pattern": "Acme"}])
    nlp.to_disk(tmp_path / "names")
    monkeypatch.setenv("TUNELOOP_PII_SPACY_MODEL", str(tmp_path / "names"))
    scrubber = pii.build_scrubber("presidio")
    assert scrubber.names == f"on: spaCy model {tmp_path / 'names'}"
    out, found = scrubber.scrub("Anna Schmidt of Acme (anna@acme.example.com) asked for a refund.")
    assert out == "[PERSON] of Acme ([EMAIL]) asked for a refund."
    assert dict(found) == {"person": 1, "email": 1}


def test_a_named_spacy_model_that_is_not_there_turns_names_off_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNELOOP_PII_SPACY_MODEL", "en_core_web_nonexistent")
    scrubber = pii.build_scrubber("presidio")
    assert scrubber.names == ("off: TUNELOOP_PII_SPACY_MODEL=en_core_web_nonexistent is neither an installed spaCy "
                              "package nor a path")
    assert scrubber.scrub("Anna Schmidt called")[0] == "Anna Schmidt called"


def test_phone_regions(monkeypatch: pytest.MonkeyPatch) -> None:
    """phonenumbers looks for national formats in the configured regions (Presidio's eight by default)."""
    from tuneloop.jobs import pii_presidio

    monkeypatch.delenv("TUNELOOP_PII_PHONE_REGIONS", raising=False)
    assert pii_presidio.phone_regions() == ("US", "GB", "DE", "FR", "IL", "IN", "CA", "BR")
    monkeypatch.setenv("TUNELOOP_PII_PHONE_REGIONS", " de, gb ")
    scrubber = pii_presidio.PresidioScrubber()
    assert scrubber.phone_regions == ("DE", "GB")
    # international numbers are found whatever the regions
    assert scrubber.scrub("call +1 415 555 2671 now")[0] == "call [PHONE] now"
    monkeypatch.setenv("TUNELOOP_PII_PHONE_REGIONS", "DE,UK")
    with pytest.raises(ValueError, match="TUNELOOP_PII_PHONE_REGIONS: UK not"):
        pii_presidio.phone_regions()


def test_engine_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TUNELOOP_PII_ENGINE", raising=False)
    assert pii.build_scrubber().engine == "presidio"  # the pii extra is in dev
    monkeypatch.setenv("TUNELOOP_PII_ENGINE", "regex")
    assert pii.build_scrubber().engine == "regex"
    monkeypatch.setenv("TUNELOOP_PII_ENGINE", "spacy")
    with pytest.raises(ValueError, match="TUNELOOP_PII_ENGINE='spacy'"):
        pii.build_scrubber()


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


IMPORT_COST = """
import sys
from tuneloop.jobs import pii_presidio
print("transformers imported:", "transformers" in sys.modules)
print("finder left on sys.meta_path:", any(isinstance(f, pii_presidio._PresidioWithoutTransformers)
                                            for f in sys.meta_path))
print(pii_presidio.PresidioScrubber().scrub("mail anna@firma.de, card 4111 1111 1111 1111")[0])
from transformers import pipeline  # the process can still use transformers
print("pipeline:", callable(pipeline))
"""


def test_importing_presidio_does_not_import_transformers() -> None:
    """Presidio's transformers engines import transformers at import time (~8 s of a driver's data
    preparation, #11); the scrubber uses none of them, so Presidio is imported with transformers hidden from
    its own modules only, and only during the import."""
    done = subprocess.run([sys.executable, "-c", IMPORT_COST], capture_output=True, text=True, timeout=300,
                          check=True)
    assert done.stdout.splitlines() == ["transformers imported: False", "finder left on sys.meta_path: False",
                                        "mail [EMAIL], card [CARD]", "pipeline: True"], done.stderr


@pytest.mark.parametrize(("importer", "name", "hidden"), [
    ("presidio_analyzer.nlp_engine.huggingface_token_pipe", "transformers", True),
    ("presidio_analyzer.predefined_recognizers.ner.huggingface_ner_recognizer", "transformers", True),
    ("presidio_analyzer.nlp_engine.huggingface_token_pipe", "torch", False),  # only transformers is hidden
    ("tuneloop.jobs.modeling", "transformers", False),  # anyone else's import passes through
    ("presidio_analyzer", "transformers.pipelines", False),  # submodules: only reached via the top package
])
def test_the_finder_hides_transformers_from_presidio_modules_only(importer: str, name: str, hidden: bool) -> None:
    from tuneloop.jobs import pii_presidio

    finder = pii_presidio._PresidioWithoutTransformers()
    # Run the lookup from a frame whose module is `importer`, as an import statement in that module would.
    scope: dict[str, object] = {"__name__": importer, "finder": finder, "name": name}
    if hidden:
        with pytest.raises(ModuleNotFoundError, match="not imported for Presidio"):
            exec("finder.find_spec(name, None)", scope)
    else:
        exec("result = finder.find_spec(name, None)", scope)
        assert scope["result"] is None
