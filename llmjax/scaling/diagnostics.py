"""When not to believe a fit: checks that turn a fitted law into sentences of warning.

Every check reads a fit (llmjax.scaling.fit) and returns flags: short codes with a
sentence each, written to fit.json, summary.md and the CLI. They catch what a table of
numbers hides: a parameter at the edge of the search (E -> 0, an exponent -> 0 or past
the start grid), bootstrap intervals collapsed to a point or spanning orders of
magnitude, predictions below the data's known entropy or below the fitted E's interval,
a known entropy outside E's interval, and too many resamples that could not be fitted.
"""

import dataclasses
import math

import numpy as np

from llmjax.scaling import fit

# An exponent below this is no power law: the term is a constant that trades with E.
MIN_EXPONENT = 0.02
# E below this share of the lowest observed loss has slid to the search's bound of 0.
MIN_E_SHARE = 0.01
# Upper ends of Approach 3's start grid: fits past them left the searched region.
GRID_EDGE = {'alpha': max(fit.StartGrid.alpha), 'beta': max(fit.StartGrid.beta),
             'A': math.exp(max(fit.StartGrid.a)), 'B': math.exp(max(fit.StartGrid.b))}
# An interval whose ends differ by a factor over this spans orders of magnitude.
MAX_RATIO = 10.0
# Relative width under which a bootstrap interval has collapsed to a point.
COLLAPSED = 1e-6


@dataclasses.dataclass(frozen=True)
class Flag:
  code: str  # stable identifier, e.g. 'E_at_bound'
  message: str  # one sentence a reader can act on

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def approach3_flags(found: fit.Approach3, pts, budgets=()) -> list[Flag]:
  """Flags of Approach 3's fit to `pts`, and of its predictions at `budgets`."""
  law, estimates, flags = found.law, found.estimates(), []
  free = [n for n in fit.LAW_FIELDS if n not in found.fixed]
  lowest = float(np.min(pts['loss']))
  if 'E' in free and law.E < MIN_E_SHARE * lowest:
    flags.append(Flag('E_at_bound', f'E = {law.E:.3g} is at the search\'s lower bound (0): '
                      'the losses do not flatten towards a floor, so the fit cannot tell the '
                      'irreducible loss from the power-law terms; do not read E, A or B, and '
                      'fix E (--fix E=VALUE) if the floor is known.'))
  if 'E' in free and law.E > lowest:
    flags.append(Flag('E_above_data', f'E = {law.E:.4g} is above the lowest observed loss '
                      f'{lowest:.4g}: the law cannot describe the best trials.'))
  for name in ('alpha', 'beta'):
    value = getattr(law, name)
    if name in free and value < MIN_EXPONENT:
      flags.append(Flag(f'{name}_degenerate', f'{name} = {value:.3g} is close to 0: the loss '
                        f'hardly depends on {"N" if name == "alpha" else "D"} in these points, '
                        'so its term is a constant that trades with E; the allocation exponents '
                        'a and b are meaningless.'))
  for name, edge in GRID_EDGE.items():
    if name in free and getattr(law, name) > edge:
      flags.append(Flag(f'{name}_past_grid', f'{name} = {getattr(law, name):.3g} lies past the '
                        f'start grid (up to {edge:.3g}): the optimizer left the searched region, '
                        'usually because another parameter ran to a bound.'))
  flags += interval_flags({n: estimates[n] for n in free + ['a', 'b']}, found.bootstrap)
  flags += _fitted_share_flags(found)
  flags += _truth_flags(found, pts.attrs.get('irreducible_loss'))
  for c in budgets:
    flags += _prediction_flags(found, c, pts.attrs.get('irreducible_loss'))
  return flags


def compute_optimal_flags(found: fit.ComputeOptimal) -> list[Flag]:
  """Flags of Approach 1 or 2: exponents that do not describe an allocation, and intervals."""
  flags = []
  a, b = found.n_opt.a, found.d_opt.a
  if not (0 < a < 1 and 0 < b < 1):
    flags.append(Flag('exponent_out_of_range', f'a = {a:.3g} and b = {b:.3g}: under C = 6ND '
                      'both lie in (0, 1) and sum to 1; these points do not resolve the '
                      'compute-optimal allocation.'))
  elif abs(a + b - 1) > 0.1:
    flags.append(Flag('exponents_do_not_sum_to_1', f'a + b = {a + b:.3g}, not 1: the optima '
                      'do not follow C = 6ND; the budgets are probably too few or too close.'))
  flags += interval_flags(found.estimates(), found.bootstrap)
  return flags + _fitted_share_flags(found)


def interval_flags(estimates: dict[str, fit.Estimate], bootstrap: int) -> list[Flag]:
  """Intervals collapsed to a point, or spanning more than a factor MAX_RATIO."""
  if bootstrap == 0:
    return []
  flags = []
  for name, e in estimates.items():
    if not (math.isfinite(e.lo) and math.isfinite(e.hi)):
      continue
    scale = max(abs(e.value), 1e-300)
    if e.hi - e.lo <= COLLAPSED * scale:
      flags.append(Flag(f'{name}_interval_collapsed', f'The 95% interval of {name} collapsed '
                        f'to a point ({e.value:.3g}): every resample found the same value, '
                        'usually a bound of the search; the interval says nothing.'))
    elif e.lo > 0 and e.hi / e.lo > MAX_RATIO:
      flags.append(Flag(f'{name}_interval_wide', f'The 95% interval of {name} '
                        f'[{e.lo:.3g}, {e.hi:.3g}] spans {math.log10(e.hi / e.lo):.1f} orders '
                        'of magnitude: the points do not determine it.'))
  return flags


def _fitted_share_flags(found) -> list[Flag]:
  if found.bootstrap and len(found.draws) < 0.8 * found.bootstrap:
    return [Flag('bootstrap_unfitted', f'Only {len(found.draws)} of {found.bootstrap} '
                 'resamples could be fitted (the others had too few distinct points): the '
                 'intervals come from an unrepresentative subset.')]
  return []


def _truth_flags(found: fit.Approach3, truth) -> list[Flag]:
  if truth is None or 'E' in found.fixed:
    return []
  e = found.estimates()['E']
  error = e.value / truth - 1
  if math.isfinite(e.lo) and not e.lo <= truth <= e.hi:
    return [Flag('truth_outside_interval', f'The data\'s known irreducible loss {truth:.4g} lies '
                 f'outside E\'s 95% interval [{e.lo:.4g}, {e.hi:.4g}] (E = {e.value:.4g}, '
                 f'{100 * error:+.1f}%): the law, or the points, are wrong about the floor.')]
  if abs(error) > 0.05:
    return [Flag('E_off_truth', f'E = {e.value:.4g} is {100 * error:+.1f}% from the data\'s known '
                 f'irreducible loss {truth:.4g}.')]
  return []


def _prediction_flags(found: fit.Approach3, c: float, truth) -> list[Flag]:
  loss, e = found.at(c)['loss'], found.estimates()['E']
  flags = []
  if truth is not None and loss.value < truth:
    flags.append(Flag('prediction_below_entropy', f'The predicted loss {loss.value:.4g} at '
                      f'C = {c:.3g} is below the data\'s irreducible loss {truth:.4g}: '
                      'impossible, so the law is wrong there.'))
  if math.isfinite(e.lo) and loss.value < e.lo:
    flags.append(Flag('prediction_below_E_interval', f'The predicted loss {loss.value:.4g} at '
                      f'C = {c:.3g} is below the lower end {e.lo:.4g} of E\'s interval.'))
  return flags
