"""User-facing errors. The CLI prints ``error: <message>`` on one line for these,
never a traceback."""


class BraincamError(Exception):
    """A problem with the user's input or environment, explained in one sentence."""
