"""The one error type of the data package."""

from __future__ import annotations


class DataError(ValueError):
    """Bad data; the message names the file or folder at fault (bad data settings are ``ConfigError``s)."""
