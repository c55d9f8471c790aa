"""tuneloop package."""
