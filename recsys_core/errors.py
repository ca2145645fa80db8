"""Errors a user can act on. Entry points print their message and exit non-zero."""


class InputError(Exception):
    """The input drop is unusable: a file, column or too many rows are bad. Names which."""


class ConfigError(ValueError):
    """A parameter is out of range or malformed. Names the parameter."""
