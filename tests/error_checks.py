"""Shared assertion for the tests of bad input (imported by the test modules; pytest puts tests/ on the path)."""

import pytest

from arprob.errors import ArprobError


def raises(specific, call, *fragments):
    """``call()`` raises ``specific``, an :class:`ArprobError`, whose message contains every fragment."""
    with pytest.raises(specific) as raised:
        call()
    assert isinstance(raised.value, ArprobError)
    for fragment in fragments:
        assert fragment in str(raised.value), (fragment, str(raised.value))
