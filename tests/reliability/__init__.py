"""Reliability suite (issue 19): integrity, concurrency, kill windows and one-line errors."""
