"""tuneloop.operator.handlers."""
