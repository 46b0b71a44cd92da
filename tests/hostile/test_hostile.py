"""The hostile-input suite: every catalogued public entry point, every argument, every hostile value
of its kind, each run in a worker process (an abort or a hang is recorded, not fatal).

Passing means: every case ends in an ArprobError whose message names the function and the
argument (class ``clear``), and every edge case (valid but extreme input) gets its known answer.
``python -m hostile.report`` (from tests/) prints the counts by class.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostile.framework import Runner, case_ids, hostile_specs, load_catalogue

ENTRIES, EDGES = load_catalogue()
CASES = case_ids(ENTRIES)


@pytest.fixture(scope="module")
def runner():
    runner = Runner(timeout=60.0)
    yield runner
    runner.close()


def _describe(failures):
    return "\n".join(f"  {argument}={spec[0]}: {outcome}: {detail[:400]}"
                     for argument, spec, outcome, detail in failures)


@pytest.mark.parametrize("entry_id", sorted(ENTRIES))
def test_every_hostile_argument_is_refused_clearly(runner, entry_id):
    failures = []
    for case in CASES:
        if case[0] != entry_id:
            continue
        outcome, detail = runner.run(case)
        if outcome != "clear":
            failures.append((case[1], case[2], outcome, detail))
    assert not failures, f"{entry_id}: {len(failures)} hostile input(s) mishandled:\n" + _describe(failures)


@pytest.mark.parametrize("edge", sorted(EDGES))
def test_edge_inputs_get_their_known_answer(runner, edge):
    outcome, detail = runner.run(("edge", edge))
    assert outcome == "edge-ok", f"{edge}: {outcome}: {detail}"


@st.composite
def _random_case(draw):
    entry_id = draw(st.sampled_from(sorted(ENTRIES)))
    entry = ENTRIES[entry_id]
    argument = draw(st.sampled_from(sorted(entry.arguments)))
    spec = draw(hostile_specs(entry.arguments[argument]))
    return entry_id, argument, spec


@settings(max_examples=60, deadline=None)
@given(case=_random_case())
def test_random_hostile_arguments_are_refused_clearly(runner, case):
    entry = ENTRIES[case[0]]
    if (case[1], case[2][0]) in entry.skip:
        return
    outcome, detail = runner.run(case)
    assert outcome == "clear", f"{case}: {outcome}: {detail}"
