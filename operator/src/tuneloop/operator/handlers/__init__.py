"""kopf-facing code: gather what is observed, call `logic`, apply the plan through `clients`."""
