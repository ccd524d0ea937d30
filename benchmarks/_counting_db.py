"""The embedded database, counting the documents its replies carry.

Run as a script with the arguments of ``python -m secantus`` (which
``metasync up`` runs); it serves the same way, but every command's reply
is also read for the documents it returned or changed, and
``serverStatus`` reports the totals as mongod does,
``metrics.document.{returned,inserted,updated,deleted}``, plus a
breakdown by command and collection under ``benchDocuments``. SecantusDB
itself counts commands only (``opcounters``), which says nothing about
how many documents a batched command touched.

Counted from each reply: ``find``/``aggregate``/``getMore`` batches
(returned); ``insert`` ``n`` (inserted); ``update`` ``nModified``
(updated) and ``upserted`` (inserted); ``delete`` ``n`` (deleted);
``findAndModify`` its ``value`` (returned) and ``lastErrorObject``
(updated, inserted or deleted).

A benchmark helper only: the product never imports SecantusDB.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

KINDS = ("returned", "inserted", "updated", "deleted")

Dispatch = Callable[[dict[str, Any], Any], dict[str, Any]]


def _batch(reply: Mapping[str, Any]) -> int:
    cursor = reply.get("cursor")
    if not isinstance(cursor, Mapping):
        return 0
    batch = cursor.get("firstBatch", cursor.get("nextBatch"))
    return len(batch) if isinstance(batch, list) else 0


def _find_and_modify(
    doc: Mapping[str, Any], reply: Mapping[str, Any]
) -> Counter[str]:
    counts: Counter[str] = Counter()
    if reply.get("value") is not None:
        counts["returned"] += 1
    last = reply.get("lastErrorObject")
    if not isinstance(last, Mapping) or not last.get("n"):
        return counts
    if doc.get("remove"):
        counts["deleted"] += 1
    elif last.get("upserted") is not None:
        counts["inserted"] += 1
    else:
        counts["updated"] += 1
    return counts


def documents(
    name: str, doc: Mapping[str, Any], reply: Mapping[str, Any]
) -> Counter[str]:
    """The documents one command's reply says it returned or changed.

    Args:
        name: The command's name.
        doc: The command.
        reply: Its reply.

    Returns:
        Counts by kind (see :data:`KINDS`).
    """
    counts: Counter[str] = Counter()
    if not reply.get("ok"):
        return counts
    if name in ("find", "aggregate", "getMore"):
        counts["returned"] = _batch(reply)
    elif name == "insert":
        counts["inserted"] = int(reply.get("n", 0))
    elif name == "update":
        upserted = reply.get("upserted")
        counts["inserted"] = len(upserted) if isinstance(upserted, list) else 0
        counts["updated"] = int(reply.get("nModified", 0))
    elif name == "delete":
        counts["deleted"] = int(reply.get("n", 0))
    elif name.lower() == "findandmodify":
        counts = _find_and_modify(doc, reply)
    return counts


def _shape(name: str, doc: Mapping[str, Any]) -> str:
    """``"find items {_id}"``: a command, its collection and, for reads,
    the fields its filter names (the query shape, values left out)."""
    target = doc.get(name)
    key = f"{name} {target}" if isinstance(target, str) else name
    query = doc.get("filter") if name == "find" else None
    if isinstance(query, Mapping):
        key += " {" + ",".join(sorted(query)) + "}"
    return key


class DocumentCounter:
    """Totals by kind and by (command, collection); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: Counter[str] = Counter()
        self._by_command: dict[str, Counter[str]] = {}
        # The key of the find that opened each cursor still open: its
        # getMore batches are counted under the same query shape.
        self._cursors: dict[int, str] = {}

    def record(
        self, name: str, doc: Mapping[str, Any], reply: Mapping[str, Any]
    ) -> None:
        """Count one command's reply."""
        counts = documents(name, doc, reply)
        cursor = reply.get("cursor")
        cursor_id = cursor.get("id") if isinstance(cursor, Mapping) else 0
        with self._lock:
            if name == "getMore":
                opened = self._cursors.get(doc.get(name), "getMore")
                key = f"getMore ({opened})"
                if not cursor_id:
                    self._cursors.pop(doc.get(name), None)
            else:
                key = _shape(name, doc)
                if cursor_id:
                    self._cursors[cursor_id] = key
            if any(counts.values()):
                self._totals.update(counts)
                self._by_command.setdefault(key, Counter()).update(counts)

    def report(self) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
        """Totals by kind, and the same per ``"command collection"``."""
        with self._lock:
            totals = {kind: self._totals[kind] for kind in KINDS}
            by_command = {k: dict(v) for k, v in self._by_command.items()}
        return totals, by_command


def counting(original: Dispatch, counter: DocumentCounter) -> Dispatch:
    """Wrap SecantusDB's command dispatch with the counter.

    Args:
        original: ``secantus.server.dispatch``.
        counter: Where counts go.

    Returns:
        The wrapped dispatch.
    """
    from secantus.commands import command_name

    def dispatch(doc: dict[str, Any], ctx: Any) -> dict[str, Any]:
        reply = original(doc, ctx)
        name = command_name(doc)
        if name == "serverStatus" and reply.get("ok"):
            totals, by_command = counter.report()
            reply.setdefault("metrics", {})["document"] = totals
            reply["benchDocuments"] = by_command
        else:
            counter.record(name, doc, reply)
        return reply

    return dispatch


def main(argv: list[str]) -> int:
    """Serve like ``python -m secantus`` with the counter in place."""
    import secantus.server
    from secantus.cli import main as serve

    # The server module calls ``dispatch`` through its own global.
    secantus.server.dispatch = counting(
        secantus.server.dispatch, DocumentCounter()
    )
    result: int = serve(argv)
    return result


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
