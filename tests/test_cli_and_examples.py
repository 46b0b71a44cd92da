"""The main job (`arprob check`) and the runnable examples."""

import json
import runpy
from pathlib import Path

import jax
import numpy as np
import pytest

import arprob.suite
from arprob import TabularJoint
from arprob.cli import main
from arprob.suite import Case
from arprob.verify import from_law

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))


def _cases(wrong: bool):
    def make():
        model = TabularJoint.random(jax.random.key(0), 2, 3)
        law = model.law()
        if wrong:  # an "exact" sampler that is not: mass moved between two outcomes
            law = law.copy()
            law[0], law[1] = law[0] + 0.5 * law[1], 0.5 * law[1]
        return from_law(law, 3, 2, name="wrong" if wrong else "exact"), model

    return lambda quick=False: [Case("from_law", "TabularJoint(V=3, L=2)", "exact", make)]


def test_cli_passes_exact_samplers_and_writes_json(tmp_path, monkeypatch):
    monkeypatch.setattr(arprob.suite, "cases", _cases(wrong=False))
    out = tmp_path / "report.json"
    assert main(["check", "--quick", "--json", str(out), "--plots", str(tmp_path / "plots")]) == 0
    record = json.loads(out.read_text())["cases"][0]
    assert record["verdict"] == "PASS" and record["report"]["exact_tv"] < 1e-12
    assert len(list((tmp_path / "plots").glob("*.png"))) == 1


def test_cli_exits_nonzero_when_an_exact_claim_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(arprob.suite, "cases", _cases(wrong=True))
    out = tmp_path / "report.json"
    assert main(["check", "--quick", "--json", str(out)]) == 1
    record = json.loads(out.read_text())["cases"][0]
    assert record["verdict"] == "FAIL" and record["report"]["exact_tv"] > 0.01


def test_builtin_suite_claims_match_exact_laws():
    """Every 'exact' case's law equals its target's to 1e-12 (the suite's claims are true)."""
    for case in arprob.suite.cases():
        sampler, target = case.make()
        distance = 0.5 * np.abs(np.asarray(sampler.law()).ravel() - target.law()).sum()
        if case.claim == "exact":
            assert distance < 1e-12, case
        else:
            assert distance > 1e-3, case


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs_as_a_script(path):
    runpy.run_path(str(path), run_name="__main__")
