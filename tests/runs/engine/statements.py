"""Statements seen on the connection, for the hot-path tests
(`with connection.execute_wrapper(seen := Statements()): …`)."""
from __future__ import annotations

from typing import Any


class Statements:
    def __init__(self) -> None:
        self.sql: list[str] = []

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        self.sql.append(sql)
        return execute(sql, params, many, context)

    def own(self) -> list[str]:
        """Without the savepoints of the test's transaction."""
        return [s for s in self.sql if not s.startswith(("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT"))]

    def writes(self, table: str) -> list[str]:
        """The INSERTs, UPDATEs and step statements (WITH r …) that name `table`."""
        return [s for s in self.sql if f'"{table}"' in s and s.lstrip()[:6].upper() in ("INSERT", "UPDATE", "WITH R")]
