"""Exceptions a user can act on. The CLI prints their message as one line and exits 2."""


class ShadowfarmError(Exception):
    """Base class: bad input or state that the user can fix."""


class ConfigError(ShadowfarmError, ValueError):
    """A config field is unknown, of the wrong type or out of range; the message names it."""


class DataError(ShadowfarmError, ValueError):
    """A data set file is missing, unreadable or malformed; the message names the file."""


class RunError(ShadowfarmError):
    """A run directory is missing, foreign (another config) or corrupt."""


SHOWN = 200  # characters of a value an error line shows


def shown(value, limit: int = SHOWN) -> str:
    """`repr(value)` for an error line, cut to `limit` characters: `[[0, 0, … (861,204 characters)`."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


def unknown_name(what: str, name: str, valid) -> ConfigError:
    """The error for a registry miss: lists the valid names."""
    return ConfigError(f"unknown {what} {name!r} (valid: {', '.join(sorted(valid))})")
