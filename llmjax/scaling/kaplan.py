"""Single-variable laws in the style of Kaplan et al. (2020): L(N) and L(D).

L(N) is read off the points with the most tokens for each model size (the nearest to
converged in D), L(D) off the points of the largest model; each is fitted as a pure
power law L = k X^a (Kaplan's form) and, given 4 or more distinct X, with an offset,
L = E + k X^a. A sweep built as IsoFLOP profiles holds only a few such points, so these
are a cross-check of Approach 3, not a replacement: they need 3 distinct X to be drawn.
"""

import dataclasses

import pandas as pd

from llmjax.scaling import fit

MIN_POINTS = 3  # distinct X for a law worth showing
MAX_EXPONENT = 3.0  # |a| of an offset fit beyond which it fits a step, not a power law


@dataclasses.dataclass(frozen=True, eq=False)
class SingleLaw:
  variable: str  # 'N' or 'D'
  points: pd.DataFrame  # name, N, D, loss: the points fitted
  pure: fit.PowerLaw  # L = k X^a
  offset: fit.PowerLaw | None  # L = E + k X^a, None with fewer than 4 points or no fit
  note: str  # how the points were chosen

  def to_dict(self) -> dict:
    return {'variable': self.variable, 'note': self.note, 'pure': self.pure.to_dict(),
            'offset': None if self.offset is None else self.offset.to_dict(),
            'points': self.points.to_dict(orient='records')}


def single_laws(pts: pd.DataFrame) -> tuple[dict[str, SingleLaw], dict[str, str]]:
  """L(N) and L(D) where the points support them; the others with the reason."""
  picks = {'N': (pts.sort_values('D').groupby('N', sort=True).tail(1),
                 'for each N, its trial with the most tokens'),
           'D': (pts[pts['N'] == pts['N'].max()],
                 f'the trials of the largest model (N = {pts["N"].max():.3g})')}
  laws, skipped = {}, {}
  repeated = (pts.groupby('N')['D'].nunique() >= 2).sum()
  if repeated < MIN_POINTS:  # then the largest D per N is just every point of the sweep
    picks.pop('N')
    skipped['L(N)'] = (f'{repeated} model sizes were trained on more than one token count '
                       f'(need {MIN_POINTS}), so no size has a point at large D')
  for variable, (chosen, note) in picks.items():
    chosen = chosen.sort_values(variable)[['name', 'N', 'D', 'loss']].reset_index(drop=True)
    distinct = chosen[variable].nunique()
    if distinct < MIN_POINTS:
      skipped[f'L({variable})'] = f'{note} give {distinct} distinct {variable} (need {MIN_POINTS})'
      continue
    pure = fit.fit_power_law(chosen[variable], chosen['loss'])
    if pure.a >= 0:  # the larger X had less of the other resource: no law in X alone
      skipped[f'L({variable})'] = (f'loss does not fall with {variable} ({note}; exponent '
                                   f'{pure.a:+.3g}): the other variable limits it')
      continue
    offset = None
    if distinct >= 4:
      try:
        offset = fit.fit_power_law(chosen[variable], chosen['loss'], offset=True)
      except ValueError:
        offset = None
      if offset is not None and not -MAX_EXPONENT < offset.a < 0:
        note += (f'; the offset fit is left out: its exponent {offset.a:.3g} is no scaling '
                 'law (the points flatten onto a floor too fast)')
        offset = None
    laws[variable] = SingleLaw(variable, chosen, pure, offset, note)
  return laws, skipped
