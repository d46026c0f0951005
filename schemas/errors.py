"""The one error type for broken contracts: it always names the file, the column and rows."""
from __future__ import annotations

from typing import Iterable, Sequence


class ContractError(ValueError):
    """Input that breaks a data contract.

    The message names the file, the column and the first offending rows so that a user can
    open the file and find the problem without reading a traceback.
    """

    def __init__(
        self,
        path: str | None,
        problem: str,
        *,
        column: str | None = None,
        rows: Sequence[int] | None = None,
        values: Sequence[object] | None = None,
        total: int | None = None,
    ) -> None:
        self.path = path
        self.column = column
        self.rows = list(rows or [])
        self.values = list(values or [])
        self.total = total if total is not None else len(self.rows)
        self.problem = problem
        super().__init__(self._message())

    def _message(self) -> str:
        where = self.path or "<input>"
        if self.column is not None:
            where += f": column '{self.column}'"
        msg = f"{where}: {self.problem}"
        if self.rows:
            shown = _describe_rows(self.rows, self.values)
            more = f" (and {self.total - len(self.rows)} more)" if self.total > len(self.rows) else ""
            msg += f"; {self.total} row(s), first: {shown}{more}"
        return msg


def _describe_rows(rows: Iterable[int], values: Sequence[object]) -> str:
    rows = list(rows)
    if values:
        return ", ".join(f"row {r} ({v!r})" for r, v in zip(rows, values))
    return ", ".join(f"row {r}" for r in rows)
