"""Tests of arprob.markov."""
