"""The data floor's error type (its own module so that every reader can raise it without importing another)."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """A data file is missing, unreadable or does not hold what was expected.

    The message is a single line naming the file and what was expected.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
