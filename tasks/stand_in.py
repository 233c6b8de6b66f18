"""How numbers from stand-in models are labelled wherever they are shown.

A module of its own, without Prefect, so that reading commands (`textme query`) can say
it without importing the pipeline."""

from __future__ import annotations

__all__ = ["STAND_IN_NOTE"]

STAND_IN_NOTE = (
    "Numbers marked stand-in come from stand-in models (toy or tiny encoders built "
    "locally): they show the method's mechanics, not the paper's results."
)
