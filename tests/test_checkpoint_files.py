"""Checkpoint files: atomic replace, checksum and length checks, safe loading, fallback, pruning."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch

from psann_stream import CheckpointError, KeyedLearner, Learner, StatefulNet
from psann_stream.checkpoint import CheckpointWarning, list_checkpoints, load_checkpoint, load_latest, save_checkpoint


def _learner() -> Learner:
    return Learner(StatefulNet(3, hidden=(6,), seed=0))


def _data(n=60):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, 3))
    return X, np.sin(X.sum(axis=1))


def test_learner_through_a_checkpoint_file_continues_bit_identically(tmp_path):
    X, Y = _data()
    a = _learner()
    a.learn_batch(X[:30], Y[:30])
    save_checkpoint(tmp_path, {"learner": a.state_dict(), "position": 30}, step=30)
    step, payload = load_latest(tmp_path)
    assert step == 30 and payload["position"] == 30
    b = _learner()
    b.load_state_dict(payload["learner"])
    assert np.array_equal(a.learn_batch(X[30:], Y[30:]), b.learn_batch(X[30:], Y[30:]))


def test_keyed_learner_with_string_keys_survives_a_checkpoint_file(tmp_path):
    X, Y = _data()
    keys = np.array(["a", "b", "c"])[np.arange(60) % 3]
    a = KeyedLearner(StatefulNet(3, hidden=(6,), seed=0), per_key_weights=True, max_keys=2)
    a.learn_batch(keys[:30], X[:30], Y[:30])
    save_checkpoint(tmp_path, {"keyed": a.state_dict()}, step=1)
    b = KeyedLearner(StatefulNet(3, hidden=(6,), seed=0), per_key_weights=True, max_keys=2)
    b.load_state_dict(load_latest(tmp_path)[1]["keyed"])
    assert np.array_equal(a.learn_batch(keys[30:], X[30:], Y[30:]), b.learn_batch(keys[30:], X[30:], Y[30:]))


def test_keep_last_prunes_old_checkpoints_and_no_temp_files_remain(tmp_path):
    for s in range(6):
        save_checkpoint(tmp_path, {"s": s}, step=s, keep_last=3)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 4, 5]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda b: b[: len(b) // 2], "truncated"),
        (lambda b: b[:20], "truncated"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 0xFF]), "checksum mismatch"),
        (lambda b: b"XXXXXXX" + b[7:], "bad magic"),
        (lambda b: b[:7] + bytes([9]) + b[8:], "format version 9"),
    ],
)
def test_damaged_newest_checkpoint_is_reported_and_the_previous_one_used(tmp_path, damage, reason):
    save_checkpoint(tmp_path, {"v": torch.tensor([1.0])}, step=1)
    newest = save_checkpoint(tmp_path, {"v": torch.tensor([2.0])}, step=2)
    newest.write_bytes(damage(newest.read_bytes()))
    with pytest.raises(CheckpointError, match=reason):
        load_checkpoint(newest)
    with pytest.warns(CheckpointWarning, match=f"{reason}.*Using the previous checkpoint, step 1"):
        step, payload = load_latest(tmp_path)
    assert step == 1 and torch.equal(payload["v"], torch.tensor([1.0]))


def test_no_good_checkpoint_raises_listing_every_problem(tmp_path):
    p = save_checkpoint(tmp_path, {"v": 1}, step=1)
    p.write_bytes(p.read_bytes()[:10])
    with pytest.raises(CheckpointError, match=r"(?s)no readable checkpoint.*ckpt-000000000001.psck: truncated"):
        load_latest(tmp_path)
    assert load_latest(tmp_path / "empty") is None


class Sneaky:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_arbitrary_objects_are_refused_by_safe_loading(tmp_path):
    """A well-formed file whose body pickles an arbitrary callable is refused, not executed."""
    import hashlib

    from psann_stream.checkpoint import _HEADER, MAGIC, VERSION

    body = io.BytesIO()
    torch.save({"x": Sneaky()}, body, pickle_module=pickle)
    raw = body.getvalue()
    path = tmp_path / "ckpt-000000000001.psck"
    path.write_bytes(_HEADER.pack(MAGIC, VERSION, len(raw), hashlib.sha256(raw).digest()) + raw)
    with pytest.raises(CheckpointError, match="refused by safe loading"):
        load_checkpoint(path)


def test_bad_arguments_are_explained(tmp_path):
    with pytest.raises(CheckpointError, match="step = -1"):
        save_checkpoint(tmp_path, {}, step=-1)
    with pytest.raises(CheckpointError, match="keep_last = 0"):
        save_checkpoint(tmp_path, {}, step=1, keep_last=0)
