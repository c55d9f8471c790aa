"""Synthetic invoice-extraction traffic for the monitor tests and the monitor benchmark: a reference set
and traffic windows drawn from the same template (in distribution) or from a changed input template."""

from __future__ import annotations

import json
import random
from typing import Any

VENDORS = ("Acme", "Globex Corporation", "Initech", "Umbrella Health Ltd", "Stark Industries", "Wayne Enterprises")
TEMPLATE = "Invoice {inv} from {vendor}, dated {date}. Total due: {total} EUR. {note}"
NOTES = ("", "Thank you for your business.", "Payment within 30 days.", "Late fees apply after the due date.")
# The drifted traffic: another system's export, a pipe-separated record instead of a sentence.
DRIFTED_TEMPLATE = "### EXPORT v2 ###\nREF={inv}|AMT={total}|CUR=EUR|SUPPLIER={vendor}|DT={date}|ST=OPEN|LN=01"


def rows(n: int, seed: int, template: str = TEMPLATE) -> list[dict[str, str]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        inv = f"INV-{rng.randint(1000, 99999)}"
        total = f"{rng.randint(1, 9999)}.{rng.randint(0, 99):02d}"
        date = f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        vendor = rng.choice(VENDORS)
        prompt = template.format(inv=inv, vendor=vendor, date=date, total=total, note=rng.choice(NOTES)).strip()
        completion = json.dumps({"invoice_id": inv, "vendor": vendor, "date": date, "total": total})
        out.append({"prompt": prompt, "completion": completion})
    return out


def frame(n: int, seed: int, template: str = TEMPLATE) -> Any:
    import pandas as pd

    return pd.DataFrame(rows(n, seed, template))
