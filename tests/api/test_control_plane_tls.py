"""The local control plane's TLS: the kubeconfig carries the CA that signed kube-apiserver's serving
certificate, every client (the Python client, kubectl, plain ssl) verifies the server with it, and none
skips verification, so no InsecureRequestWarning can appear."""

from __future__ import annotations

import base64
import socket
import ssl
import warnings
from urllib.parse import urlsplit

import pytest
import yaml
from kubernetes import client, config

pytestmark = pytest.mark.apiserver


def test_kubeconfig_carries_the_ca_and_never_skips_verification(control_plane):
    kubeconfig = yaml.safe_load(control_plane.kubeconfig.read_text())
    (cluster,) = [c["cluster"] for c in kubeconfig["clusters"]]
    assert "insecure-skip-tls-verify" not in cluster
    assert base64.b64decode(cluster["certificate-authority-data"]) == control_plane.ca_file.read_bytes()


@pytest.mark.parametrize("context", ["admin", "restricted"])
def test_python_client_verifies_the_server_without_warnings(control_plane, context):
    api_client = config.new_client_from_config(config_file=str(control_plane.kubeconfig), context=context)
    assert api_client.configuration.verify_ssl
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an InsecureRequestWarning (or any other) fails the test
        version = client.VersionApi(api_client).get_code()
        client.AuthenticationV1Api(api_client).create_self_subject_review(
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        )
    assert version.major == "1"


def test_kubectl_verifies_the_server(control_plane):
    assert control_plane.kubectl("get", "--raw", "/readyz").stdout == "ok"


@pytest.mark.parametrize("server_name", ["127.0.0.1", "localhost"])
def test_serving_certificate_is_signed_by_the_ca_for_loopback_names(control_plane, server_name):
    port = urlsplit(control_plane.url).port
    ctx = ssl.create_default_context(cafile=str(control_plane.ca_file))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(
        raw, server_hostname=server_name
    ) as tls:
        assert tls.getpeercert()


def test_a_client_without_the_ca_is_refused(control_plane):
    """Verification is real: the system trust store does not know this CA."""
    port = urlsplit(control_plane.url).port
    ctx = ssl.create_default_context()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, pytest.raises(ssl.SSLCertVerificationError):
        ctx.wrap_socket(raw, server_hostname="127.0.0.1")
