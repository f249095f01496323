"""Keys: the identity of a stream across batches, processes and machines.

* :class:`EncodedKeys`: a batch's keys as integer codes into its distinct keys, made once at the
  Arrow boundary (``pyarrow.compute.dictionary_encode``), so that nothing downstream (the engine's
  checks, the key table, sharding, the output) creates a Python object per row.
* :func:`sort_key`: the canonical order of keys (saved states list keys in it).
* :func:`shard_of`: the shard of a key, stable across processes, runs and machines (Python's
  ``hash`` of a ``str`` is not).
"""

from __future__ import annotations

import hashlib
from typing import Any, Hashable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import ConfigError

__all__ = ["EncodedKeys", "distinct_index", "key_bytes", "shard_of", "sort_key"]


class EncodedKeys:
    """The keys of ``N`` events as ``codes [N]`` (int64) into ``values``, the batch's ``D`` distinct
    keys (an Arrow array of the key column's type). Code ``-1`` is a null key. Indexing with an
    integer gives that event's key (a plain Python value); with an index array or a boolean mask,
    the events' keys as another ``EncodedKeys`` over the same values.

    >>> keys = EncodedKeys.from_arrow(pa.array(["b", "a", "b", None]))
    >>> keys.codes.tolist(), keys.distinct(), keys[2], keys.null_mask().tolist()
    ([0, 1, 0, -1], ['b', 'a'], 'b', [False, False, False, True])
    """

    __slots__ = ("codes", "values", "_distinct")

    def __init__(self, codes: np.ndarray, values: pa.Array) -> None:
        self.codes = codes
        self.values = values
        self._distinct: list[Any] | None = None

    @classmethod
    def from_arrow(cls, column: pa.Array | pa.ChunkedArray) -> "EncodedKeys":
        """Encode a key column (one dictionary pass in C++; a dictionary column is used as it is)."""
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        enc = column if pa.types.is_dictionary(column.type) else pc.dictionary_encode(column)
        codes = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        return cls(codes, enc.dictionary)

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, (int, np.integer)):
            c = int(self.codes[index])
            return None if c < 0 else self.distinct()[c]
        return EncodedKeys(self.codes[index], self.values)

    def distinct(self) -> list[Any]:
        """The ``D`` distinct keys as plain Python values (made once per batch, not per row)."""
        if self._distinct is None:
            self._distinct = self.values.to_pylist()
        return self._distinct

    def null_mask(self) -> np.ndarray:
        """``[N]`` bool: where the key is null."""
        return self.codes < 0

    def present(self, rows: np.ndarray | None = None) -> tuple[list[Any], np.ndarray]:
        """The distinct keys that occur (in ``rows``, or anywhere), sorted as ``numpy.unique`` sorts,
        and each event's index into that list (``-1`` for null keys and events outside ``rows``)."""
        codes = self.codes if rows is None else self.codes[rows]
        used = np.unique(codes[codes >= 0])
        distinct = self.distinct()
        found = [distinct[c] for c in used.tolist()]
        try:
            order = sorted(range(len(found)), key=found.__getitem__)
        except TypeError:  # keys of mixed types: the canonical order instead
            order = sorted(range(len(found)), key=lambda i: sort_key(found[i]))
        remap = np.full(len(distinct), -1, dtype=np.int64)
        remap[used[order]] = np.arange(len(order), dtype=np.int64)
        index = np.where(codes >= 0, remap[np.maximum(codes, 0)], -1)
        return [found[i] for i in order], index

    def counts(self) -> tuple[list[Any], np.ndarray]:
        """The distinct keys that occur (sorted) and how many events each has (null keys left out)."""
        keys, index = self.present()
        return keys, np.bincount(index[index >= 0], minlength=len(keys))

    def to_arrow(self) -> pa.Array:
        """The keys as an Arrow array of the key column's type (nulls where null)."""
        idx = pa.array(self.codes, mask=self.codes < 0)
        return self.values.take(idx)

    def tolist(self) -> list[Any]:
        """Every event's key as a plain Python value (a Python object per row: for hooks and errors)."""
        distinct = self.distinct()
        return [None if c < 0 else distinct[c] for c in self.codes.tolist()]


def distinct_index(keys: Sequence[Hashable] | EncodedKeys) -> tuple[list[Any], np.ndarray]:
    """A batch's distinct keys (sorted; Python values) and each event's index into them: one dict
    lookup per distinct key for whoever maps keys to rows. :class:`EncodedKeys` (what the engine
    passes) are used as codes, without a Python object per row; one event needs no sort. A null key is
    refused, naming its event."""
    if isinstance(keys, EncodedKeys):
        uniq, index = keys.present()
        if len(index) and index.min() < 0:
            n = int(np.argmax(index < 0))
            raise ConfigError(f"event {n} of this batch has a null key; give every event a key.")
        return uniq, index
    if len(keys) == 1:
        k = keys[0]
        return [k.item() if isinstance(k, np.generic) else k], np.zeros(1, dtype=np.int64)
    arr = np.asarray(keys, dtype=object) if not isinstance(keys, np.ndarray) else keys
    found, inverse = np.unique(arr, return_inverse=True)
    return found.tolist(), inverse.reshape(-1)


def sort_key(key: Hashable) -> tuple[str, str]:
    """The canonical order of keys of mixed types (by type name, then ``repr``): the order of keys in
    a saved state, so that the same learned state gives the same checkpoint whatever order the keys
    first arrived in."""
    return (type(key).__name__, repr(key))


def key_bytes(key: Hashable) -> bytes:
    """A typed encoding of a key (``"1"``, ``1``, ``1.0`` and ``True`` differ), the input of :func:`shard_of`."""
    if isinstance(key, str):
        return b"s:" + key.encode("utf-8")
    if isinstance(key, (bool, np.bool_)):
        return b"b:1" if key else b"b:0"
    if isinstance(key, (int, np.integer)):
        return b"i:" + str(int(key)).encode()
    if isinstance(key, (float, np.floating)):
        return b"f:" + float(key).hex().encode()
    if isinstance(key, bytes):
        return b"y:" + key
    raise ConfigError(f"key {key!r} of type {type(key).__name__} cannot be sharded; use str, int, float, bool or bytes keys.")


def shard_of(key: Hashable, shards: int) -> int:
    """The shard (``0 <= s < shards``) of ``key``: BLAKE2b of a typed encoding of the key, modulo
    ``shards``; stable across processes, runs and machines (Python's ``hash`` of a str is not)."""
    digest = hashlib.blake2b(key_bytes(key), digest_size=8).digest()
    return int.from_bytes(digest, "little") % shards
