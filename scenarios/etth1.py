"""ETTh1 (electricity transformer temperature, hourly; Zhou et al., AAAI 2021) as a prequential
scenario: the oil temperature ``OT`` one hour ahead from the seven current readings.

The file is not part of the project (CC BY-ND 4.0): pass its path (``--data PATH``;
``../shared/data/ETT/ETTh1.csv`` in this workspace). 17,420 hourly rows give 17,419 events: the
inputs of event ``t`` are row ``t``'s ``HUFL, HULL, MUFL, MULL, LUFL, LULL, OT``, its target row
``t + 1``'s ``OT``. Input column 6 (the current ``OT``) is the last known target, so persistence
("the next hour = now") is a model of the scenario and a member of the ensemble. No change points
are marked: the drift is real and unlabelled. :func:`etth1_readings` gives the same events with all
seven readings of hour ``t + 1`` as targets (:mod:`psann_stream.scenarios.multi_target`).
:func:`etth1_keyed` is the keyed feed of the same file: each reading a key, its next hour from its
current value.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv

from psann_stream.errors import ConfigError

from .scenario import Scenario, table

__all__ = ["COLUMNS", "etth1", "etth1_keyed", "etth1_readings"]

COLUMNS = ("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT")


def etth1_readings(path: str | Path, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The seven readings of every hour ``t`` (``X [N, 7]``, columns :data:`COLUMNS`) and of hour
    ``t + 1`` (``Y [N, 7]``): the events of the multi-target scenario (the first ``n``; all by default)."""
    v = _read(Path(path))
    x, y = v[:-1], v[1:]
    return (x, y) if n is None else (x[:n], y[:n])


def etth1(path: str | Path, n: int | None = None) -> Scenario:
    """The scenario from the CSV at ``path`` (the first ``n`` events; all by default)."""
    x, y = etth1_readings(path, n)
    return Scenario("etth1", "ETTh1 oil temperature one hour ahead from the seven current readings (real data)",
                    table(x, y[:, COLUMNS.index("OT")]), (), last_target_column=COLUMNS.index("OT"))


def etth1_keyed(path: str | Path, n: int | None = None) -> Scenario:
    """The seven readings as a keyed feed (one key per reading, the key its column name): for every
    hour ``t`` (the first ``n``; all by default) and reading ``c``, in that order, the input is
    ``c``'s value at ``t``, the target its value at ``t + 1``. Input column 0 is the last known
    target (persistence applies). The readings' scales differ (``LULL`` ~1, ``OT`` ~10-40), and one
    shared model serves them all: what a keyed feed of sensors asks of a keyed learner."""
    x, y = etth1_readings(path, n)
    hours, C = x.shape
    return Scenario("etth1-keyed", "ETTh1's seven readings as seven keys, each one hour ahead from its current value "
                    "(real data)", table(x.reshape(-1, 1), y.reshape(-1), [COLUMNS[c] for c in range(C)] * hours), (),
                    keyed=True, last_target_column=0)


def _read(p: Path) -> np.ndarray:
    """Every row's seven readings, float64, after checking the file."""
    if not p.is_file():
        raise ConfigError(f"etth1: no file at {p}; pass the path of ETTh1.csv with --data "
                          "(../shared/data/ETT/ETTh1.csv here; from the ETDataset repository elsewhere).")
    t = pacsv.read_csv(p)
    missing = [c for c in COLUMNS if c not in t.column_names]
    if missing:
        raise ConfigError(f"etth1: {p} has no column(s) {missing}; expected the ETTh1 header date,{','.join(COLUMNS)}.")
    v = np.stack([t.column(c).to_numpy().astype(np.float64) for c in COLUMNS], axis=1)
    if not np.isfinite(v).all():
        row = int(np.argmax(~np.isfinite(v).all(axis=1)))
        raise ConfigError(f"etth1: row {row + 2} of {p} holds a missing or non-finite value; the file is not the original.")
    return v
