"""What the chart's API tests share: applying rendered objects server-side, logging in as a
ServiceAccount with a TokenRequest token, and reading the apiserver's audit log of what a
ServiceAccount asked for (the control plane logs service accounts' requests, `ControlPlane.audit_log`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml
from kubernetes import client as k8s

Call = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)


def server_side_apply(control_plane, docs: list[dict]) -> None:
    control_plane.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager", "helm-chart-test",
                          "-f", "-", input_text=yaml.safe_dump_all(docs))


def sa_kubeconfig(control_plane, api_client, namespace: str, name: str, path: Path) -> Path:
    """A kubeconfig holding a TokenRequest token of the ServiceAccount (what a pod's projected token is)."""
    token = k8s.CoreV1Api(api_client).create_namespaced_service_account_token(
        name, namespace, {"spec": {"expirationSeconds": 3600}}).status.token
    admin = yaml.safe_load(control_plane.kubeconfig.read_text())
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "clusters": admin["clusters"],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": admin["clusters"][0]["name"], "user": name}}],
        "current-context": name,
    }))
    return path


@dataclass(frozen=True)
class Request:
    verb: str
    group: str
    resource: str
    namespace: str
    code: int

    @property
    def call(self) -> Call:
        return (self.group, self.resource, self.verb)


def audit(control_plane, user: str, since: int = 0, stage: str = "ResponseComplete") -> list[Request]:
    """The user's requests from `since` (a byte offset) at `stage`: ResponseComplete for what has been
    answered; ResponseStarted for a watch, which has no ResponseComplete while it stays open."""
    out = []
    with open(control_plane.audit_log, "rb") as f:
        f.seek(since)
        for line in f:
            event = json.loads(line)
            ref = event.get("objectRef")
            if event["user"]["username"] != user or ref is None or event.get("stage") != stage:
                continue
            resource = ref.get("resource", "") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
            out.append(Request(event["verb"], ref.get("apiGroup", ""), resource, ref.get("namespace", ""),
                               event.get("responseStatus", {}).get("code", 0)))
    return out


def audit_offset(control_plane) -> int:
    return control_plane.audit_log.stat().st_size if control_plane.audit_log.exists() else 0


