"""The three errors an encoder user can meet, each with a message that names the place.

They share a base class so a caller (the CLI, a Prefect task) can catch every encoder
problem at once and print its one-line message.
"""

from __future__ import annotations


class EncoderError(Exception):
    """Base class of every error raised by `textme.encoders`."""


class EncoderInputError(EncoderError, ValueError):
    """A bad input item: the message names the item (index and value, or file)."""


class ModelUnavailableError(EncoderError, RuntimeError):
    """Weights could not be found or fetched.

    The message is one line: which model, that it could not be fetched, and which option
    points the encoder at a local copy instead.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class UnknownEncoderError(EncoderError, KeyError):
    """No built-in or plugin encoder has that name; the message lists the known names.

    A `KeyError` so that `except KeyError` keeps working, but printed as plain text
    (`KeyError.__str__` would wrap the message in quotes).
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""
