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

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


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


def test_the_docs_build_runs_every_example():
    """CI runs the examples once, in the docs build (``mkdocs build --strict`` in .ci/run): mkdocs-jupyter
    executes every examples/*.py that docs/hooks/examples.py publishes, without a cache and with
    ``allow_errors: false``, so an example that raises fails the build.  This guards that configuration."""
    yaml = pytest.importorskip("yaml")  # with the docs extra

    class Loader(yaml.SafeLoader):
        """A safe loader that also reads mkdocs.yml's !ENV tags."""

    # !ENV [NAME, default]: the default, as a build without the variable sees it
    Loader.add_constructor("!ENV", lambda loader, node: loader.construct_sequence(node)[-1])
    config = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=Loader)
    plugins = dict(next(iter(p.items())) if isinstance(p, dict) else (p, {}) for p in config["plugins"])
    jupyter = plugins["mkdocs-jupyter"]
    assert jupyter["include"] == ["examples/*.py"] and "docs/hooks/examples.py" in config["hooks"]
    assert jupyter["execute"] is True and jupyter["allow_errors"] is False and jupyter["cache"] is False
    assert any(isinstance(entry, dict) and "Examples" in entry for entry in config["nav"])
    assert EXAMPLES


def test_an_example_runs_as_a_script_and_saves_its_figure(tmp_path, monkeypatch):
    """The script path of the examples (headless backend, figures saved to $ARPROB_FIGURES, ``__file__``
    defined), on a quick one; the notebook path of every example runs in the docs build."""
    monkeypatch.setenv("ARPROB_FIGURES", str(tmp_path))
    runpy.run_path(str(ROOT / "examples" / "catching_a_broken_sampler.py"), run_name="__main__")
    assert [path.name for path in tmp_path.iterdir()] == ["mutant_reused_uniform_law.png"]
