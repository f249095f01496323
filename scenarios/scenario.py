"""The scenario record every stream builder returns, and the one way its table is built.

>>> s = Scenario("demo", "two rows", table(np.zeros((2, 3)), np.ones(2)), ())
>>> s.n_features, s.table.num_rows
(3, 2)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

__all__ = ["Scenario", "table"]


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    table: pa.Table
    change_points: tuple[int, ...]
    keyed: bool = False
    outliers: tuple[int, ...] = ()  # rows whose target is a deliberate outlier: learned from, not scored
    autoregressive: bool = False  # x[t + 1] = (x[t][1:], y[t]): the inputs are the series' last values
    last_target_column: int | None = None  # an input column holding the last target value (if not autoregressive)

    @property
    def n_features(self) -> int:
        return self.table.schema.field("x").type.list_size

    @property
    def persistence_column(self) -> int | None:
        """The input column holding the target's last value (the last one on autoregressive streams), else None."""
        return self.n_features - 1 if self.autoregressive else self.last_target_column

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(X [N, F] float64, y [N], keys [N] or None)``."""
        x = self.table.column("x").combine_chunks().flatten().to_numpy().astype(np.float64).reshape(-1, self.n_features)
        keys = self.table.column("key").to_numpy(zero_copy_only=False) if self.keyed else None
        return x, self.table.column("y").to_numpy(), keys


def table(x: np.ndarray, y: np.ndarray, keys: list[str] | None = None) -> pa.Table:
    """``x`` as a ``fixed_size_list<float32>[F]`` column, ``y`` float64, and an optional ``key`` column."""
    x = np.asarray(x, dtype=np.float32)
    cols = {"x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1]), "y": pa.array(np.asarray(y, np.float64))}
    if keys is not None:
        cols["key"] = pa.array(keys)
    return pa.table(cols)
