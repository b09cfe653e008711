"""The analysis of curves, from the results table alone: onsets (emergence.py), developmental
stages (stages.py), and the tables built from them (tables.py)."""
