"""Test configuration: float64 everywhere; hypothesis profiles from :mod:`arprob.testing.profiles`
(``ci`` derandomized, ``dev`` the local default, ``random`` with 200 examples for local exploration)."""

import jax

from arprob.testing.profiles import load_profiles

jax.config.update("jax_enable_x64", True)
load_profiles()
