"""
Containers whose copies share storage until written: the ratchet tree's node array and key counts.

Every commit, created or received, stages its changes on a copy of the
group's :class:`~townsquare.mls.ratchet_tree.RatchetTree` (RFC 9420 §14:
creating or processing a commit must not change the group until it is
merged), and an UpdatePath changes only the O(log n) nodes of one direct
path. Copying the node array, the tree hashes and the key counts whole cost
about 0.4 ms of a 3 ms commit at 10,000 members, so the tree keeps them here:

* :class:`CowList` is a list cut into chunks of :data:`CHUNK` entries. A copy
  shares every chunk with its original (it copies the list of chunks, about
  one pointer per 256 entries); whichever of the two writes a chunk first
  copies that chunk alone. So staging a path costs one chunk copy per
  written chunk, about 16 for 10,000 members.
* :class:`CowCounter` counts keys (a multiset) as a shared base dict that
  nobody writes plus a small dict of the counts changed since. A copy shares
  the base and copies the small dict; once that outgrows a fraction of the
  base, a copy folds it in (O(n), once per many commits).

Both behave as if every copy were independent: a write to one is never seen
by another. The unit tests check exactly that, against plain lists and dicts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import chain, islice
from typing import Generic, TypeVar

__all__ = ["CHUNK", "CowCounter", "CowList"]

_T = TypeVar("_T")
_K = TypeVar("_K")

# Entries per chunk, a power of two so that an index splits with a shift and
# a mask. A 10,000-member tree (32,767 nodes) has 128 chunks: a copy copies
# 128 pointers, a first write to a chunk 256.
_SHIFT = 8
CHUNK = 1 << _SHIFT
_MASK = CHUNK - 1


class CowList(Generic[_T]):
    """
    A fixed-size list of non-negative indices whose :meth:`copy` shares storage until written.
    """

    __slots__ = ("_chunks", "_length", "_owned")

    _chunks: list[list[_T]]
    # One flag per chunk: whether this list alone holds it (and may write it in place).
    _owned: bytearray
    _length: int

    def __init__(self, items: Iterable[_T] = ()) -> None:
        """
        Hold ``items``, in order.

        :param items: the initial entries.
        """
        self._chunks = []
        self._owned = bytearray()
        self._length = 0
        self.extend(items)

    def __len__(self) -> int:
        """
        :returns: the number of entries.
        """
        return self._length

    def __getitem__(self, index: int) -> _T:
        """
        :returns: the entry at ``index``.
        :raises IndexError: if ``index`` is not in ``range(len(self))``.
        """
        if not 0 <= index < self._length:
            raise IndexError(f"index {index} is outside a list of {self._length}")
        return self._chunks[index >> _SHIFT][index & _MASK]

    def __setitem__(self, index: int, value: _T) -> None:
        """
        Set the entry at ``index``, copying its chunk first if another list shares it.

        :raises IndexError: if ``index`` is not in ``range(len(self))``.
        """
        if not 0 <= index < self._length:
            raise IndexError(f"index {index} is outside a list of {self._length}")
        position = index >> _SHIFT
        chunk = self._chunks[position]
        if not self._owned[position]:
            chunk = chunk.copy()
            self._chunks[position] = chunk
            self._owned[position] = 1
        chunk[index & _MASK] = value

    def __iter__(self) -> Iterator[_T]:
        """
        :returns: the entries in order.
        """
        return chain.from_iterable(self._chunks)

    def to_list(self) -> list[_T]:
        """
        :returns: the entries as a new plain list (for loops over every entry).
        """
        return list(chain.from_iterable(self._chunks))

    def copy(self) -> CowList[_T]:
        """
        :returns: a list with the same entries that shares every chunk until one is written.
        """
        other: CowList[_T] = CowList.__new__(CowList)
        other._chunks = self._chunks.copy()
        other._length = self._length
        # The chunks are now shared: neither list may write one in place.
        self._owned = bytearray(len(self._chunks))
        other._owned = bytearray(len(self._chunks))
        return other

    def extend(self, items: Iterable[_T]) -> None:
        """
        Append ``items`` at the end.
        """
        iterator = iter(items)
        if self._length & _MASK:
            # Fill the last, partial chunk first (a copy of it, if shared).
            position = len(self._chunks) - 1
            last = self._chunks[position]
            if not self._owned[position]:
                last = last.copy()
                self._chunks[position] = last
                self._owned[position] = 1
            room = CHUNK - len(last)
            before = len(last)
            last.extend(islice(iterator, room))
            self._length += len(last) - before
            if len(last) < CHUNK:
                return
        while chunk := list(islice(iterator, CHUNK)):
            self._chunks.append(chunk)
            self._owned.append(1)
            self._length += len(chunk)

    def truncate(self, length: int) -> None:
        """
        Keep the first ``length`` entries and drop the rest.

        :raises ValueError: if ``length`` is negative or more than ``len(self)``.
        """
        if not 0 <= length <= self._length:
            raise ValueError(f"cannot truncate a list of {self._length} to {length}")
        keep = (length + _MASK) >> _SHIFT
        del self._chunks[keep:]
        del self._owned[keep:]
        if length & _MASK:
            position = keep - 1
            # A shared chunk is replaced by a shorter copy; an owned one cut in place.
            if self._owned[position]:
                del self._chunks[position][length & _MASK :]
            else:
                self._chunks[position] = self._chunks[position][: length & _MASK]
                self._owned[position] = 1
        self._length = length

    def assign(self, items: Iterable[_T]) -> None:
        """
        Replace every entry with ``items`` (which may change the length).
        """
        self._chunks = []
        self._owned = bytearray()
        self._length = 0
        self.extend(items)


class CowCounter(Generic[_K]):
    """
    A count per key (a multiset) whose :meth:`copy` costs O(keys changed lately), not O(keys).
    """

    __slots__ = ("_base", "_changed")

    # Shared between copies and never written: each copy writes _changed only.
    _base: dict[_K, int]
    # The count of each key changed since _base was made (0 for a key now absent).
    _changed: dict[_K, int]

    def __init__(self, counts: dict[_K, int] | None = None) -> None:
        """
        Start from ``counts`` (positive counts; the dict is taken over, not copied).

        :param counts: a count per key.
        """
        self._base = {} if counts is None else counts
        self._changed = {}

    def count(self, key: _K) -> int:
        """
        :returns: how many times ``key`` is held (0 if not at all).
        """
        changed = self._changed.get(key)
        if changed is not None:
            return changed
        return self._base.get(key, 0)

    def __contains__(self, key: _K) -> bool:
        """
        :returns: whether ``key`` is held at least once.
        """
        changed = self._changed.get(key)
        if changed is not None:
            return changed > 0
        return key in self._base

    def add(self, key: _K, delta: int) -> None:
        """
        Change the count of ``key`` by ``delta``.

        :raises ValueError: if the count would become negative.
        """
        count = self.count(key) + delta
        if count < 0:
            raise ValueError("a count cannot become negative")
        self._changed[key] = count

    def items(self) -> Iterator[tuple[_K, int]]:
        """
        :returns: each key held and its count (positive), in no particular order.
        """
        changed = self._changed
        for key, count in self._base.items():
            if key not in changed:
                yield key, count
        for key, count in changed.items():
            if count:
                yield key, count

    def keys(self) -> Iterator[_K]:
        """
        :returns: each key held, in no particular order.
        """
        return (key for key, _ in self.items())

    def all_once(self) -> bool:
        """
        :returns: whether every key is held exactly once.
        """
        return all(count == 1 for _, count in self.items())

    def copy(self) -> CowCounter[_K]:
        """
        :returns: a counter with the same counts, sharing the base with this one.
        """
        if len(self._changed) > 64 + len(self._base) // 16:
            # Fold the changes in, so that copies and lookups stay cheap: a
            # new base for this counter (the old one may be shared), O(n) once
            # per many commits.
            self._base = dict(self.items())
            self._changed = {}
        other: CowCounter[_K] = CowCounter.__new__(CowCounter)
        other._base = self._base
        other._changed = self._changed.copy()
        return other
