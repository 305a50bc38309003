"""The version of triofetch (read by the build from this file: keep it one assignment)."""

__version__ = "0.1.0"
