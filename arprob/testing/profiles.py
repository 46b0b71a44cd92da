"""Hypothesis profiles shared by arprob's test-suites (and usable in yours).

Select one with ``HYPOTHESIS_PROFILE=<name>``:

* ``ci``: derandomized (the same examples on every run), 25 examples per
  property.  ``.ci/run`` sets it explicitly; it is also the default when the
  ``CI`` environment variable is set and ``HYPOTHESIS_PROFILE`` is not.
* ``dev``: the local default; random examples, 25 per property.
* ``random``: nightly-style exploration for local runs; random examples, 200
  per property, e.g.
  ``HYPOTHESIS_PROFILE=random python -m pytest -q -p no:cacheprovider tests/test_properties.py``.
  A failure prints the falsifying example; pin it with ``@example`` so that
  the derandomized CI profile checks it from then on.
"""

from __future__ import annotations

import os

__all__ = ["load_profiles"]


def load_profiles() -> str:
    """Register the ``ci``, ``dev`` and ``random`` profiles and load the selected one; return its name."""
    from hypothesis import HealthCheck, settings

    quiet = [HealthCheck.too_slow, HealthCheck.data_too_large]
    settings.register_profile("ci", derandomize=True, deadline=None, max_examples=25, suppress_health_check=quiet)
    settings.register_profile("dev", deadline=None, max_examples=25, suppress_health_check=quiet)
    settings.register_profile("random", deadline=None, max_examples=200, suppress_health_check=quiet)
    name = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
    settings.load_profile(name)
    return name
