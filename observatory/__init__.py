"""Analysis stage: probes every checkpoint of every run (see DESIGN.md)."""
