"""Unit tables for the serving runtime: request bodies, app arguments, the inference log."""
