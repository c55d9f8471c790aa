"""tuneloop.operator.logic."""
