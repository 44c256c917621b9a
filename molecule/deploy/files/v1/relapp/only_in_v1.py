"""Removed in v2: a deploy must not leave it behind in the release in use."""
