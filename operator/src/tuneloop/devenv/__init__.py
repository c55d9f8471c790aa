"""Local stand-ins for a cluster's parts (control plane, Ray head, MLflow server) used by the tests
and `make demo`. Each starts real upstream software on loopback with free ports and stops it."""
