"""benchmarks/markov_scale.py --quick runs end to end and its methods agree on the stationary laws.

The script's own numbers are timings; what is checked here is that every method it times finds the
same law (float64 l1 distances to arprob's law below 1e-8: the iterative methods stop at an l1 change
of 1e-13 per step, the direct ones are exact to rounding) and that the JSON has the fields the
benchmarks README quotes.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "markov_scale.py"
#: Agreement of two float64 stationary laws (l1), with room above the 1e-13 stopping rule.
AGREE = 1e-8


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory):
    output = tmp_path_factory.mktemp("markov_scale") / "markov_scale.json"
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--output", str(output)], capture_output=True,
                          text=True, timeout=600, env=environment, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(output.read_text())


@pytest.mark.slow
def test_quick_run_has_every_section(quick_result):
    assert set(quick_result) >= {"header", "stationary", "largest", "peers", "largest_handled", "rows"}
    assert quick_result["header"]["quick"] is True
    stationary = quick_result["stationary"]
    for key in ("arprob_first_s", "arprob_iterations", "arprob_residual", "baseline_total_s", "baseline_compile_s",
                "baseline_run_s", "ratio_baseline", "eigs_s", "eigs_context_size", "ratio_eigs", "l1_baseline",
                "l1_eigs", "float32_residual", "l1_float32"):
        assert stationary[key] is not None, key
    largest = quick_result["largest"]
    assert largest["status"] == "ok" and largest["within_limit"] and largest["peak_rss_bytes"] > 0
    assert [entry["num_windows"] for entry in quick_result["peers"]] == [64]
    failed = [(row["method"], row["context_size"], row.get("error", "")[-300:]) for row in quick_result["rows"]
              if row["status"] not in ("ok", "skipped")]
    assert not failed


@pytest.mark.slow
def test_quick_run_methods_agree(quick_result):
    stationary = quick_result["stationary"]
    assert stationary["l1_baseline"] < AGREE
    assert stationary["l1_eigs"] < AGREE
    assert stationary["l1_baseline_probe"] < AGREE
    assert stationary["arprob_residual"] < AGREE and stationary["baseline_residual"] < AGREE
    # float32 holds about 7 digits: its law is within 1e-5 (l1) of float64's, and no closer than rounding
    assert 0 < stationary["l1_float32"] < 1e-5
    for entry in quick_result["peers"]:
        assert entry["l1_baseline"] < AGREE and entry["l1_eigs"] < AGREE


@pytest.mark.slow
@pytest.mark.parametrize("peer", ["quantecon", "pydtmc"])
def test_quick_run_peers_agree(quick_result, peer):
    pytest.importorskip(peer, reason=f"{peer} is not installed (the bench extra brings it)")
    for entry in quick_result["peers"]:
        assert entry[f"{peer}_status"] == "ok"
        assert entry[f"l1_{peer}"] < AGREE
        assert entry[f"ratio_{peer}_first"] > 0
