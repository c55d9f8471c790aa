"""The tuneloop API: pydantic models that are the single source of the CRD schemas.

This package imports pydantic and the standard library only, so the operator, the Ray jobs and the
monitors can all share it. `crds/*.yaml` is generated from these models (`make crds`).
"""
