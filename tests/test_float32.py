"""Float32 works or says why: the documented code runs with ``jax_enable_x64`` off, and laws are
validated at the tolerance of the precision they were computed in.

* The README's tour and every ``python`` block of ``docs/getting-started.md`` are extracted from the
  Markdown at test time (so the test follows the docs) and run in a fresh interpreter with x64 off:
  the lines that enable x64 are replaced by ``pass``, ``JAX_ENABLE_X64=0`` is set, and the script
  ends by asserting that JAX still computes in float32.  Blocks that name a markdown-exec
  ``session="..."`` share that session's namespace; the others share one namespace per page, in
  order, as a reader runs them.  A block preceded by the line ``<!-- needs x64 -->`` is skipped.
* :func:`arprob._validation.sum_tolerance` and :func:`arprob._validation.check_probs`: 1e-9 in
  float64, 1e-5 in float32 and for float64 arrays computed with x64 off; a law within float32's
  rounding passes, one that is really off (1e-3) is refused in every precision.
* Error messages print enough digits to show how far a sum is from one.

This module runs with x64 on (``tests/conftest.py``); x64 off is exercised in subprocesses, and by
patching :func:`arprob._validation.x64_enabled` for the unit tests of the tolerance logic.
"""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arprob
import arprob._validation as validation
from arprob._validation import check_probs, format_sum, sum_tolerance
from arprob.errors import InvalidProbabilityError
from arprob.verify import Sampler, from_law, gof, hellinger, kl, tv

ROOT = Path(__file__).resolve().parent.parent
DOCS = {"README tour": ROOT / "README.md", "getting started": ROOT / "docs" / "getting-started.md"}
SKIP_MARKER = "<!-- needs x64 -->"
ENABLE_X64 = re.compile(r"""^(\s*)jax\.config\.update\(\s*["']jax_enable_x64["']\s*,\s*True\s*\).*$""", re.M)
FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```", re.S | re.M)
SESSION = re.compile(r"""session=["']?([^"'\s]+)""")
STILL_FLOAT32 = (
    "\n\nimport jax.numpy as _jnp\n"
    "assert _jnp.zeros(()).dtype == _jnp.float32, 'the script turned x64 on; the float32 run tested nothing'\n"
)


def python_blocks(markdown: str) -> dict[str, list[str]]:
    """The ``python`` code blocks of a Markdown page, in order and grouped by markdown-exec session
    (``""`` for blocks without one), without those marked as needing x64."""
    sessions: dict[str, list[str]] = {}
    for match in FENCE.finditer(markdown):
        before = markdown[: match.start()].rstrip().splitlines()
        if before and before[-1].strip() == SKIP_MARKER:
            continue
        session = SESSION.search(match.group(1))
        sessions.setdefault(session.group(1) if session else "", []).append(match.group(2))
    return sessions


def page_script(markdown: str) -> str:
    """One script that runs each session's blocks, x64 lines removed, in a namespace of its own."""
    runs = []
    for session, blocks in python_blocks(markdown).items():
        code = "\n\n".join(without_x64(block) for block in blocks)
        runs.append(f"print({f'--- session {session!r}'!r}, flush=True)\n"
                    f"exec(compile({code!r}, {f'<session {session!r}>'!r}, 'exec'), {{'__name__': '__main__'}})")
    return "\n".join(runs)


def without_x64(code: str) -> str:
    """``code`` with every ``jax.config.update("jax_enable_x64", True)`` replaced by ``pass``."""
    return ENABLE_X64.sub(lambda match: f"{match.group(1)}pass", code)


def run_without_x64(code: str, directory: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with x64 off (JAX_ENABLE_X64=0), from ``directory``."""
    script = directory / "script.py"
    script.write_text(code + STILL_FLOAT32)
    environment = {**os.environ, "JAX_ENABLE_X64": "0", "MPLBACKEND": "Agg"}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environment.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, str(script)], cwd=directory, env=environment, capture_output=True,
                          text=True, timeout=timeout)


# -- the documented code, with x64 off ------------------------------------------------------------


def test_block_extraction_follows_the_markdown():
    page = textwrap.dedent("""\
        text
        ```python
        import jax
        jax.config.update("jax_enable_x64", True)   # exact checks
        ```
        ```bash
        arprob check
        ```
        <!-- needs x64 -->
        ```python
        assert False
        ```
        ```python exec="on"
        print(1)
        ```
        """)
    blocks = python_blocks(page)
    assert blocks == {"": ['import jax\njax.config.update("jax_enable_x64", True)   # exact checks\n', "print(1)\n"]}
    assert without_x64(blocks[""][0]) == "import jax\npass\n"
    sessions = python_blocks('```python exec="on" session="a"\nx = 1\n```\n```python session="b"\ny = 2\n```\n'
                             '```python exec="on" session="a"\nprint(x)\n```\n')
    assert sessions == {"a": ["x = 1\n", "print(x)\n"], "b": ["y = 2\n"]}


@pytest.mark.slow
@pytest.mark.parametrize("page", sorted(DOCS))
def test_documented_code_runs_with_x64_off(page, tmp_path):
    markdown = DOCS[page].read_text()
    assert python_blocks(markdown), f"{page}: no python blocks found in {DOCS[page]}"
    result = run_without_x64(page_script(markdown), tmp_path)
    assert result.returncode == 0, (
        f"{page} fails with jax_enable_x64 off:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")


def test_float32_laws_are_accepted_and_wrong_ones_refused_with_x64_off(tmp_path):
    """In a fresh float32 process: the laws the library computes pass every public entry point, their
    distances are small, and a law that is really off (1e-3) is still refused with a message that
    names the tolerance and x64."""
    code = textwrap.dedent("""\
        import warnings
        import jax, numpy as np
        import arprob
        from arprob.errors import InvalidProbabilityError
        from arprob.samplers import ancestral, ancestral_law
        from arprob.verify import Sampler, check, from_law, gof, hellinger, kl, tv

        assert jax.numpy.zeros(()).dtype == jax.numpy.float32
        model = arprob.NGram.random(jax.random.key(0), length=6, vocab_size=3, context_size=2)
        law, sampler_law = model.law(), ancestral_law(model, order="random")
        assert 0 < abs(law.sum() - 1) < 1e-5, law.sum() - 1      # float32 rounding, not exactly one
        assert tv(law, sampler_law) < 1e-6 and kl(law, sampler_law) < 1e-6 and hellinger(law, sampler_law) < 1e-3
        sampler = from_law(sampler_law, 3, 6)
        assert gof(np.asarray(sampler(jax.random.key(1), 2000)), law, vocab_size=3).p_value > 1e-6
        Sampler(lambda key, n: ancestral(key, model, n, order="random"), law=sampler_law)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # check warns that x64 is off
            report = check(sampler, model, num_samples=20_000)
        assert report.exact_tv < 1e-6, report.exact_tv
        for bad in (law * (1 + 1e-3), law.astype(np.float32) * np.float32(1 - 1e-3)):
            for call in (lambda: tv(bad, law), lambda: from_law(bad, 3, 6), lambda: Sampler(print, law=bad),
                         lambda: gof(np.zeros((1, 6), int), bad, vocab_size=3)):
                try:
                    call()
                except InvalidProbabilityError as error:
                    message = str(error)
                    assert "expected 1 within 1e-05" in message and "jax_enable_x64 is off" in message, message
                else:
                    raise AssertionError("a law off by 1e-3 was accepted")
        print("ok")
        """)
    result = run_without_x64(code, tmp_path)
    assert result.returncode == 0 and "ok" in result.stdout, f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"


# -- dtype-aware tolerance ------------------------------------------------------------------------


def _float32_law(seed: int = 0, size: int = 729) -> np.ndarray:
    """A float32 softmax over ``size`` outcomes: sums to one only up to float32 rounding."""
    return np.asarray(jax.nn.softmax(jax.random.normal(jax.random.key(seed), (size,), jnp.float32)))


def test_sum_tolerance_follows_the_precision(monkeypatch):
    assert sum_tolerance(np.float64) == sum_tolerance(None) == sum_tolerance(np.int32) == 1e-9
    assert sum_tolerance(np.float32) == 1e-5
    assert sum_tolerance(np.float16) == pytest.approx(8 * np.finfo(np.float16).eps)
    assert sum_tolerance(jnp.bfloat16) == pytest.approx(8 * float(jnp.finfo(jnp.bfloat16).eps))
    monkeypatch.setattr(validation, "x64_enabled", lambda: False)
    assert sum_tolerance(np.float64) == sum_tolerance(np.float32) == 1e-5   # computed from float32 values


def test_float32_law_within_rounding_is_accepted_everywhere():
    law = _float32_law()
    assert law.dtype == np.float32 and 1e-9 < abs(law.sum(dtype=np.float64) - 1) < 1e-5
    check_probs("test", "p", law)
    for distance in (tv, kl, hellinger):
        assert distance(law, law) == pytest.approx(0.0, abs=1e-12)
        assert distance(jnp.asarray(law), law) == pytest.approx(0.0, abs=1e-12)   # a JAX float32 array too
    sampler = from_law(jnp.asarray(law), 3, 6)
    Sampler(sampler.fn, law=jnp.asarray(law))
    result = gof(np.asarray(sampler(jax.random.key(0), 5000)), jnp.asarray(law), vocab_size=3)
    assert result.p_value > 1e-6   # false alarm 1e-6 for an exact sampler


@pytest.mark.parametrize("scale", [1 + 1e-3, 1 - 1e-3, 1 - 3e-5])
def test_float32_law_really_off_is_refused(scale):
    law = (_float32_law() * np.float32(scale)).astype(np.float32)
    for call in (lambda: check_probs("test", "p", law), lambda: tv(law, law), lambda: from_law(law, 3, 6),
                 lambda: gof(np.zeros((1, 6), int), jnp.asarray(law), vocab_size=3)):
        with pytest.raises(InvalidProbabilityError, match="expected 1 within 1e-05 \\(float32's rounding\\)"):
            call()


def test_float64_tolerance_applies_with_x64_on_and_relaxes_with_x64_off(monkeypatch):
    law = _float32_law().astype(np.float64)   # float32 values in a float64 array: off by ~1e-7
    with pytest.raises(InvalidProbabilityError, match="expected 1 within 1e-09") as raised:
        tv(law, law)
    assert "build it from float64 values" in str(raised.value)
    monkeypatch.setattr(validation, "x64_enabled", lambda: False)
    assert tv(law, law) == 0.0
    with pytest.raises(InvalidProbabilityError, match="jax_enable_x64 is off") as raised:
        tv(law * (1 - 3e-5), law)
    assert "jax.config.update('jax_enable_x64', True)" in str(raised.value)
    with pytest.raises(InvalidProbabilityError, match="sums to 0.5"):
        tv(law * 0.5, law)


# -- digits in the messages -----------------------------------------------------------------------


@pytest.mark.parametrize("total, text", [
    (0.8, "0.8"), (1.3, "1.3"), (2.0, "2"), (0.523456789, "0.523457"),
    (1 - 1.56e-9, "0.99999999844"), (1 + 2.18e-8, "1.0000000218"), (1 - 3e-5, "0.99997"),
    (1.0, "1"), (float("inf"), "inf"),
])
def test_format_sum_shows_the_gap_to_one(total, text):
    assert format_sum(total) == text


def test_message_never_says_sums_to_1_when_off():
    law = np.full(4, 0.25) * (1 - 1.56e-9)
    with pytest.raises(InvalidProbabilityError) as raised:
        arprob.verify.tv(law, np.full(4, 0.25))
    message = str(raised.value)
    assert "tv: p sums to 0.99999999844 along the last axis, expected 1 within 1e-09" in message, message
    assert "off by -1.56e-09" in message
    assert "sums to 1 " not in message
