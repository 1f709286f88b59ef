"""Scaling experiments: sweep definitions, the sweep runner, results tables, fits and reports."""
