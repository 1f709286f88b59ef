"""Downstream evaluation: tasks (tasks.py), the packed scorer (scorer.py), metrics
(metrics.py), the runner that scores a run's checkpoint (runner.py), task names (registry.py),
the lm-evaluation-harness adapter (harness.py) and the CLI (cli.py, python -m llmjax.eval)."""
