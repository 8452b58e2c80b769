"""`with` support for the test servers: each defines `close()`, leaving the block calls it."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Closing:
    """Mixin: `__enter__` returns the object, `__exit__` calls its `close()`."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
