"""Template sections (package data)."""
