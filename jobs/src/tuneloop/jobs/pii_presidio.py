"""The PII scrubber on maintained recognizers (the `pii` extra): Microsoft Presidio's pattern recognizers
for e-mail, payment cards (Luhn), IBANs (mod 97, per-country formats), IP addresses and crypto wallet
addresses, the `phonenumbers` library (through Presidio's PhoneRecognizer) for phone numbers, and person
names through Presidio's spaCy recognizer when a spaCy model is installed.

Presidio's `AnalyzerEngine` is not used: by default it loads a spaCy model and downloads one when none
is installed. The recognizers are called directly, without an NLP engine, and a spaCy pipeline is only
loaded when it is an installed package or a path (`TUNELOOP_PII_SPACY_MODEL`), so nothing is ever
downloaded. Presidio's EmailRecognizer validates domains with `tldextract`, whose default extractor
fetches the Public Suffix List over HTTP on first use; ours reads the list bundled with tldextract.

Two rules stay ours (tuneloop.jobs.pii): an IBAN-shaped string that fails mod 97 is still a mistyped
account number, so it is redacted (`iban_unverified`); Presidio's IbanRecognizer drops it and its tail
would otherwise be read as a phone number. National IDs (US SSN, UK NINO) keep our patterns: Presidio's
recognizers for them score below any useful threshold without context words.

Overlaps are resolved by kind, most specific first (a card number is never half-eaten by the phone
matcher; the digits of an IBAN never read as a card), then by length.

Importing `presidio_analyzer` imports every engine and recognizer it has, and two of its modules (the
Hugging Face token pipe of its transformers NLP engine, and its Hugging Face NER recognizer) run
`from transformers import pipeline` at import time, in a `try` that makes transformers optional. That
import alone is ~8 s of a training driver's data preparation (#11), for two classes this scrubber never
uses. So Presidio is imported with transformers hidden from Presidio's own modules only
(`_PresidioWithoutTransformers`): they take the path they take when transformers is not installed. Any
other import of transformers, on any thread, is untouched, and the hiding ends with the import.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from collections import Counter
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from types import FrameType, ModuleType

import phonenumbers
import spacy.util
import tldextract

from tuneloop.jobs import pii


class _PresidioWithoutTransformers(importlib.abc.MetaPathFinder):
    """On sys.meta_path while Presidio is imported: an import of transformers made by a Presidio module
    (found by walking the importing thread's frames) fails as if transformers were not installed; every
    other import passes through. Thread-safe: the walk only sees the importing thread's own stack."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != "transformers":
            return None
        frame: FrameType | None = sys._getframe(1)
        while frame is not None:
            if str(frame.f_globals.get("__name__", "")).startswith("presidio_analyzer"):
                raise ModuleNotFoundError("transformers is not imported for Presidio (tuneloop uses none of "
                                          "its transformers engines)", name=fullname)
            frame = frame.f_back
        return None


_hide = _PresidioWithoutTransformers()
sys.meta_path.insert(0, _hide)
try:
    from presidio_analyzer import RecognizerResult
    from presidio_analyzer.nlp_engine import SpacyNlpEngine
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        CryptoRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        SpacyRecognizer,
    )
finally:
    sys.meta_path.remove(_hide)

SPACY_MODEL_ENV = "TUNELOOP_PII_SPACY_MODEL"
# Regions whose national formats phonenumbers looks for (comma-separated ISO codes; default Presidio's eight).
# International numbers (+CC …) are found whatever the list. Each region is a scan of the text: the phone
# matcher is most of the scrubber's time (~3.5 ms a record with eight regions, ~0.3 ms with one).
PHONE_REGIONS_ENV = "TUNELOOP_PII_PHONE_REGIONS"
# Looked for, in this order, when TUNELOOP_PII_SPACY_MODEL is unset: the models Presidio documents for English.
SPACY_MODELS = ("en_core_web_lg", "en_core_web_md", "en_core_web_sm", "en_core_web_trf")

KINDS = {"EMAIL_ADDRESS": "email", "CREDIT_CARD": "card", "IBAN_CODE": "iban", "IP_ADDRESS": "ip",
         "CRYPTO": "crypto", "PHONE_NUMBER": "phone", "PERSON": "person"}
# Most specific first: on an overlap the earlier kind wins.
PRIORITY = ("email", "iban", "iban_unverified", "card", "crypto", "national_id", "ip", "phone", "person")


class OfflineEmailRecognizer(EmailRecognizer):
    """Presidio's e-mail recognizer, validating the domain against tldextract's bundled suffix list."""

    _extract = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=())

    def validate_result(self, pattern_text: str) -> bool:
        return self._extract(pattern_text).fqdn != ""


def phone_regions() -> tuple[str, ...]:
    """The regions of TUNELOOP_PII_PHONE_REGIONS, else Presidio's defaults; an unknown code is an error."""
    configured = [r.strip().upper() for r in os.environ.get(PHONE_REGIONS_ENV, "").split(",") if r.strip()]
    unknown = [r for r in configured if r not in phonenumbers.SUPPORTED_REGIONS]
    if unknown:
        raise ValueError(f"{PHONE_REGIONS_ENV}: {', '.join(unknown)} not ISO 3166 region codes phonenumbers knows "
                         "(e.g. US, GB, DE)")
    return tuple(configured) or PhoneRecognizer.DEFAULT_SUPPORTED_REGIONS


def find_spacy_model() -> tuple[str | None, str]:
    """The spaCy pipeline to detect names with (an installed package or a path) and why, or None and why
    not. Never downloads: a name that is neither is reported, not fetched."""
    configured = os.environ.get(SPACY_MODEL_ENV, "").strip()
    if configured:
        if spacy.util.is_package(configured) or Path(configured).exists():
            return configured, f"{SPACY_MODEL_ENV}={configured}"
        return None, f"{SPACY_MODEL_ENV}={configured} is neither an installed spaCy package nor a path"
    for name in SPACY_MODELS:
        if spacy.util.is_package(name):
            return name, "installed"
    return None, f"no spaCy model installed ({', '.join(SPACY_MODELS)}, or a path in {SPACY_MODEL_ENV})"


class PresidioScrubber:
    """`scrub(text)` with Presidio's recognizers; `names` says whether person names are detected."""

    engine = "presidio"

    def __init__(self, spacy_model: str | None = None, *, detect_names: bool = True) -> None:
        # The phone recognizer last: find() skips it on texts with too few digits.
        self.phone_regions = phone_regions()
        self._recognizers = [OfflineEmailRecognizer(), CreditCardRecognizer(), IbanRecognizer(), IpRecognizer(),
                             CryptoRecognizer(), PhoneRecognizer(supported_regions=self.phone_regions)]
        self._nlp: SpacyNlpEngine | None = None
        self._person = SpacyRecognizer(supported_entities=["PERSON"])
        model, why = (spacy_model, "given") if spacy_model else find_spacy_model()
        if not detect_names:
            model, why = None, "name detection turned off"
        if model is not None:
            self._nlp = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": model}])
            self._nlp.load()
        self.names = f"on: spaCy model {model}" if model else f"off: {why}"
        self.version = (f"presidio-analyzer {metadata.version('presidio-analyzer')}, "
                        f"phonenumbers {metadata.version('phonenumbers')}")

    def find(self, text: str) -> list[tuple[int, int, str]]:
        """Spans `(start, end, kind)` of the PII in `text`, overlaps resolved, in text order."""
        found: list[tuple[int, int, str]] = []
        # A phone number has 8 digits or more: the phone matcher, by far the slowest, skips texts with fewer.
        phones = sum(ch.isdigit() for ch in text) >= 8
        for recognizer in self._recognizers if phones else self._recognizers[:-1]:
            # Pattern recognizers take no NLP artifacts (Presidio's own annotation says otherwise).
            results: list[RecognizerResult] = recognizer.analyze(
                text, recognizer.supported_entities, None)  # type: ignore[arg-type]
            found += [(r.start, r.end, KINDS[r.entity_type]) for r in results if r.score > 0]
        # phonenumbers also takes dates (07.08.2026), amounts and bare order numbers for national numbers;
        # our shape check drops those. A phone-shaped number it deems invalid (an unallocated range, a
        # mistyped digit) is still someone's contact detail: our pattern redacts it too.
        found = [s for s in found if s[2] != "phone" or pii.phone_ok(text[s[0]:s[1]])]
        if phones:
            found += [(m.start(), m.end(), "phone") for m in pii.PHONE_PATTERN.finditer(text)
                      if pii.phone_ok(m.group(0))]
        # Every IBAN-shaped string; where Presidio validated the same span, its `iban` wins the overlap.
        found += [(m.start(), m.end(), "iban_unverified") for m in pii.IBAN_PATTERN.finditer(text)
                  if pii.iban_shaped(m.group(0))]
        found += [(m.start(), m.end(), "national_id") for m in pii.NATIONAL_ID_PATTERN.finditer(text)]
        if self._nlp is not None:
            artifacts = self._nlp.process_text(text, "en")
            found += [(r.start, r.end, "person")
                      for r in self._person.analyze(text, ["PERSON"], artifacts) if r.score > 0]
        kept: list[tuple[int, int, str]] = []
        for start, end, kind in sorted(found, key=lambda s: (PRIORITY.index(s[2]), s[0] - s[1], s[0])):
            if all(end <= s or start >= e for s, e, _ in kept):
                kept.append((start, end, kind))
        return sorted(kept)

    def scrub(self, text: str) -> tuple[str, Counter[str]]:
        counts: Counter[str] = Counter()
        parts, last = [], 0
        for start, end, kind in self.find(text):
            parts += [text[last:start], pii.PLACEHOLDERS[kind]]
            counts[kind] += 1
            last = end
        parts.append(text[last:])
        return "".join(parts), counts
