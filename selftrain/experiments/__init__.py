"""Experiments built from the stages (seed 002: Expert Iteration, filtered vs unfiltered)."""
