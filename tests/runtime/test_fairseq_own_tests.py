"""fairseq's own unit tests give the same outcomes with fairseq_ext loaded as without it.

A fairseq user who adds ``--user-dir fairseq_ext`` must get fairseq's behaviour wherever the plugin is
not the point. The selection is fairseq's tests of what the plugin changes (checkpoint reading, writing
and resuming, the trainer's start, the epoch iterators), from the sdist of the installed fairseq-fixed
(:mod:`support.fairseq_tests`), run twice, once as plain fairseq and once with fairseq_ext loaded as
``fairseq-train --user-dir`` loads it, and compared test by test. fairseq's ``tests/distributed/`` is
not in that sdist, so it cannot be part of the selection.

The only differences allowed are the tests the plugin fixes (:data:`FIXED_BY_PLUGIN`); a test failing
both ways must be one this environment explains (:data:`FAILING_BOTH_WAYS`, empty today).
"""

from __future__ import annotations

import pytest

from support import fairseq_tests

SELECTION = [
    "tests/test_checkpoint_utils.py",  # trains tiny translation models, loads them back (ensembles, pruning)
    "tests/test_checkpoint_utils_for_task_level_attributes.py",  # load_checkpoint with a mocked trainer
    "tests/test_train.py",  # load_checkpoint's argument checks and resumed iterators, mocked trainer
    "tests/test_iterators.py",  # the epoch iterators a resume restores
]

# They fail in plain fairseq under torch >= 2.6: torch.load refuses the checkpoints fairseq itself wrote
# (weights_only=True and fairseq's argparse/omegaconf/numpy objects); the plugin's allow-list loads them.
_REFUSED = "plain fairseq: torch >= 2.6 refuses the checkpoint fairseq wrote (weights_only)"
FIXED_BY_PLUGIN = {
    "tests/test_checkpoint_utils.py::TestCheckpointUtils::test_load_model_ensemble_and_task": _REFUSED,
    "tests/test_checkpoint_utils.py::TestCheckpointUtils::test_prune_state_dict": _REFUSED,
}

# test id -> why it fails with and without the plugin in this environment (none today)
FAILING_BOTH_WAYS: dict[str, str] = {}


@pytest.fixture(scope="module")
def outcomes():
    return fairseq_tests.run_both_ways(fairseq_tests.suite(), SELECTION)


@pytest.mark.slow
def test_the_whole_selection_ran(outcomes):
    plain, plugin = outcomes
    assert set(plain) == set(plugin)
    for module in SELECTION:  # every module collected, none empty
        assert module not in plain, f"{module}: {plain[module]} while collecting"
        assert sum(test.startswith(f"{module}::") for test in plain) >= 2, module
    assert len(plain) >= 20  # 24 with fairseq-fixed 0.12.3.1


@pytest.mark.slow
def test_outcomes_differ_only_where_the_plugin_is_the_fix(outcomes):
    plain, plugin = outcomes
    differ = {test: (plain[test], plugin.get(test)) for test in plain if plain[test] != plugin.get(test)}
    assert differ == {test: ("failed", "passed") for test in FIXED_BY_PLUGIN}


@pytest.mark.slow
def test_every_failure_is_explained(outcomes):
    plain, plugin = outcomes
    both = {test for test in plain if plain[test] in ("failed", "error") and plugin.get(test) == plain[test]}
    assert both == set(FAILING_BOTH_WAYS)
    assert not [test for test, outcome in plugin.items() if outcome in ("failed", "error") and test not in both]
