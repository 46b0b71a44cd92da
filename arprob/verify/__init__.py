"""Verification: distances between laws, goodness-of-fit, planning, check."""
