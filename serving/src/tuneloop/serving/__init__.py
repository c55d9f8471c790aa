"""The Ray Serve runtime for ModelDeployment: one application that loads a base model once per replica,
attaches a LoRA adapter per MLflow model version (multiplexed by model id), answers OpenAI-style
completions, and logs every request and feedback record, PII-scrubbed, to Parquet.

Runs inside Ray. Never imports the operator or kopf (import-linter enforces it); shares the pure pieces
(prompt rendering, PII scrubbing, the adapter format) with ``tuneloop.jobs``.
"""
