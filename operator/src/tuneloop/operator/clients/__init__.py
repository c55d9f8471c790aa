"""tuneloop.operator.clients."""
