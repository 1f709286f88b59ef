"""Fitted values with bootstrap intervals: the Estimate every fit reports, the resampling
loop that refits, and the minimum-data check shared by the fitters."""

import dataclasses
import math

import numpy as np


def require(what: str, n_params: int, n_points: int, unit: str = 'points') -> None:
  """Refuses a fit of more parameters than it has data, naming both."""
  if n_points < n_params:
    raise ValueError(f'{what} fits {n_params} parameters; {n_points} {unit} given')


@dataclasses.dataclass(frozen=True)
class Estimate:
  """A fitted value with its bootstrap standard error and 95% percentile interval."""
  value: float
  se: float = math.nan
  lo: float = math.nan
  hi: float = math.nan

  def to_dict(self) -> dict:
    return {k: json_float(v) for k, v in dataclasses.asdict(self).items()}


def estimate(value, draws) -> Estimate:
  draws = np.asarray(draws, float)
  draws = draws[np.isfinite(draws)]
  if len(draws) < 2:
    return Estimate(float(value))
  lo, hi = np.percentile(draws, [2.5, 97.5])
  return Estimate(float(value), float(np.std(draws, ddof=1)), float(lo), float(hi))


def json_float(x):
  return float(x) if x is not None and math.isfinite(x) else None


def bootstrap_draws(refit, resample, num: int, seed: int, size: int) -> np.ndarray:
  """(accepted draws, size) refitted parameter vectors; resamples too degenerate to fit
  (refit raises ValueError) are dropped, so callers compare the count with `num`."""
  rng = np.random.default_rng(seed)
  draws = []
  for _ in range(num):
    try:
      draws.append(refit(resample(rng)))
    except ValueError:
      continue
  return np.array(draws, float).reshape(-1, size)
