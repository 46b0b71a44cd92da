"""Test configuration: float64 everywhere; hypothesis profiles.

Hypothesis profiles (select with ``HYPOTHESIS_PROFILE=<name>``):

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

import os

import jax
from hypothesis import HealthCheck, settings

jax.config.update("jax_enable_x64", True)

_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile("ci", derandomize=True, deadline=None, max_examples=25, suppress_health_check=_QUIET)
settings.register_profile("dev", deadline=None, max_examples=25, suppress_health_check=_QUIET)
settings.register_profile("random", deadline=None, max_examples=200, suppress_health_check=_QUIET)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))
