"""Exceptions that carry a message meant for the person running the suite."""


class RobsigError(Exception):
    """A problem with the user's input (model spec, data, suite, option) that the user can fix.

    The message names the value, the cause and the fix. The plugin shows it without a traceback.
    """


class SuiteError(RobsigError):
    """An invalid suite file: the message starts with ``FILE:LINE``."""
