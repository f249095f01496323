"""The --config file: every section, key and value type checked before anything is built, with a
one-line error that names the key, its section and the closest valid name."""

from __future__ import annotations

import inspect

import pytest

from psann_stream import KeyedLearner, Learner
from psann_stream.cli import main
from psann_stream.config import check_config, learner_kwargs
from psann_stream.drift import DriftPolicy
from psann_stream.errors import ConfigError

from test_cli import _arrow_file


@pytest.mark.parametrize("text, expected", [
    ("[learner]\nlearning_rat = 0.1\n", "[learner] learning_rat is not a setting; the optimiser's settings"),
    ("[learner]\noptimiser = 'adam'\n", "[learner] optimiser is not a setting; did you mean 'optimizer'?"),
    ("[lerner]\noptimizer = 'adam'\n", "[lerner] is not a section; did you mean 'learner'?"),
    ("[state]\nrhoo = 0.5\n", "[state] rhoo is not a setting; did you mean 'rho'?"),
    ("[model]\nhiden = [8]\n", "[model] hiden is not a setting; did you mean 'hidden'?"),
    ("[learner]\ndrift = {treshold = 3.0}\n", "[learner.drift] treshold is not a setting; did you mean 'threshold'?"),
    ("[learner]\ncheck_every = 1.5\n", "[learner] check_every = 1.5 must be an integer, not a number."),
    ("[learner]\nnormalize_x = 1\n", "[learner] normalize_x = 1 must be true or false, not an integer."),
    ("[state]\nrho = '0.5'\n", "[state] rho = '0.5' must be a number, not a string."),
    ("[learner]\non_nonfinite = 'drop'\n", "[learner] on_nonfinite = 'drop' is not one of 'raise', 'skip'."),
])
def test_a_bad_key_or_type_is_one_line_naming_it(tmp_path, capsys, text, expected):
    _arrow_file(tmp_path / "s.arrow")
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    assert main(["run", "--input", str(tmp_path / "s.arrow"), "--features", "x", "--target", "y",
                 "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"--config {cfg}: " in err and expected in err, err


def test_every_learner_keyword_that_toml_can_write_is_accepted():
    """The [learner] schema is the learners' own signatures: each keyword with a TOML-writable default
    passes the check with that default (a key added to a learner needs no second list)."""
    checked = 0
    for owner in (Learner, KeyedLearner):
        for name, p in inspect.signature(owner).parameters.items():
            if p.kind is p.KEYWORD_ONLY and isinstance(p.default, (str, int, float, bool)):
                check_config({"learner": {name: p.default}}, "c.toml")
                checked += 1
    assert checked >= 20


def test_a_drift_table_becomes_a_drift_policy_and_the_run_uses_it(tmp_path, capsys):
    assert learner_kwargs({"drift": {"threshold": 3.0, "reset_optimizer": True}})["drift"] == DriftPolicy(
        threshold=3.0, reset_optimizer=True)
    _arrow_file(tmp_path / "s.arrow")
    cfg = tmp_path / "c.toml"
    cfg.write_text("[model]\nhidden = [8]\n[learner]\ndrift = {threshold = 1.0}\noptimizer_kwargs = {lr = 0.5}\n")
    assert main(["run", "--input", str(tmp_path / "s.arrow"), "--features", "x", "--target", "y",
                 "--config", str(cfg)]) == 0
    assert "3,000 predicted" in capsys.readouterr().out


def test_an_ensemble_beside_a_model_is_refused():
    with pytest.raises(ConfigError, match=r"\[ensemble\] builds its own members"):
        check_config({"ensemble": {}, "model": {"hidden": [4]}}, "c.toml")
    with pytest.raises(ConfigError, match=r"\[ensemble\] shares is not a setting; did you mean 'share'"):
        check_config({"ensemble": {"shares": 0.1}}, "c.toml")
