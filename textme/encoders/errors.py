"""The errors an encoder user can meet, each with a message that names the place.

They share a base class so a caller (the CLI, a Prefect task) can catch every encoder
problem at once and print its one-line message. `BadItemError` is the one a caller may
choose to survive: it names exactly one input item that cannot be decoded, so that item
can be left out and the rest encoded (the pipeline's `on_bad_item: skip`).
"""

from __future__ import annotations


class EncoderError(Exception):
    """Base class of every error raised by `textme.encoders`."""


class EncoderInputError(EncoderError, ValueError):
    """A bad input item: the message names the item (index and value, or file)."""


class BadItemError(EncoderInputError):
    """One input item cannot be read or decoded (missing, corrupt, truncated, the wrong
    kind of file). `item` is that input exactly as it was passed to `encode`; the
    message names it and says what is wrong. Raised per item, before or while that item
    is decoded, never for a problem of the whole batch or of the model.
    """

    def __init__(self, item: str, message: str) -> None:
        self.item = item
        super().__init__(message)

    def __reduce__(self):  # pickled across processes (Dask, Ray) with its item
        return (type(self), (self.item, str(self)))


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
