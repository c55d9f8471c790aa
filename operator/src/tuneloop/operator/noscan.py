"""Opt-in kopf setting for an operator deployed with least privilege (the Helm chart runs
`kopf run -m tuneloop.operator.main -m tuneloop.operator.noscan`).

kopf watches CustomResourceDefinitions (and, when it serves named namespaces, Namespaces) to notice
kinds and namespaces that appear after start-up. That needs cluster-wide list/watch on both, which
the operator's job does not: the chart installs the CRDs before the operator starts and names its
namespaces exactly. Without those rights kopf retries each refused list for about a minute, logging
an ERROR per attempt, before it gives up with a warning. Scanning off, kopf serves the kinds found by
API discovery at start-up (allowed to every authenticated user) in the namespaces it was given, and
asks for nothing else. A CRD installed after the operator needs an operator restart.

Not in `main`, so the tests' operators (admin, glob namespace patterns) keep kopf's default.
"""

from __future__ import annotations

from typing import Any

import kopf


@kopf.on.startup()
def disable_cluster_scanning(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.scanning.disabled = True
