"""Analysis of runs and sweeps for notebooks, on a laptop CPU.

  runs         Run (config, metrics, checkpoint steps, lazily restored parameters), Sweep
  weights      norms, RMS, spectra and per-head norms of the weights; changes between them
  activations  residual stream, attention patterns, logit lens, per-token losses
  compare      one analysis over a run's checkpoints or a sweep's runs (tokens, FLOPs)
  curves       metric curves on a common tokens/FLOPs grid; loss spikes
  plots        one-call matplotlib figures of all of the above
"""

from llmjax.analysis import activations, compare, curves, plots, weights
from llmjax.analysis.runs import Run, Sweep

__all__ = ['Run', 'Sweep', 'activations', 'compare', 'curves', 'plots', 'weights']
