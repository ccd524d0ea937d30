"""Repeated custom ids among millions of lines, in 8 bytes a line.

A set of a million id strings costs about 100 MB; a 64-bit digest per
line in typed arrays costs 8 MB. Digests only say which ids *may*
repeat (two ids can share a digest); the caller confirms those few by
reading their lines again and comparing the ids themselves.
"""

from __future__ import annotations

from array import array
from hashlib import blake2b

#: Digests are spread over this many arrays by their top byte, so the
#: repeat check builds one small set at a time, never one huge set.
_BUCKETS = 256


def id_digest(custom_id: str) -> int:
    """The 64-bit digest of one id."""
    digest = blake2b(custom_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class IdDigests:
    """The digests of every custom id seen."""

    def __init__(self) -> None:
        self._buckets = [array("Q") for _ in range(_BUCKETS)]

    def add(self, custom_id: str) -> None:
        """Remember one id."""
        digest = id_digest(custom_id)
        self._buckets[digest >> 56].append(digest)

    def repeated(self) -> set[int]:
        """Digests seen more than once (usually the same id twice)."""
        repeated: set[int] = set()
        for bucket in self._buckets:
            seen: set[int] = set()
            for digest in bucket:
                if digest in seen:
                    repeated.add(digest)
                else:
                    seen.add(digest)
        return repeated
