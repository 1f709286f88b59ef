"""The points every scaling fit reads: a results table (llmjax.scaling.results) or a
published one, reduced to name, N, D, C, loss, budget and note, with the rows left out
and the data's known irreducible loss (synthetic data) as attributes."""

import math
import os

import numpy as np
import pandas as pd

# Lower-cased column names read as N, D, C and loss (the multi-word ones are those of
# published tables, such as Epoch AI's reconstruction of the Chinchilla points).
_ALIASES = ({'n', 'params', 'parameters', 'model size', 'model_size'},
            {'d', 'tokens', 'training tokens', 'training_tokens'},
            {'c', 'flops', 'compute', 'training flop', 'training flops', 'training_flops'},
            {'loss', 'eval_loss'})


def points(table: pd.DataFrame | str | os.PathLike, loss: str = 'eval_loss',
           params: str = 'N') -> pd.DataFrame:
  """The finished trials of a results table (or CSV file) as the points every fit reads.

  Args:
    table: a results table (llmjax.scaling.results) or external data; column names are
      matched case-insensitively, with aliases (params/parameters/n/model size,
      tokens/d/training tokens, flops/compute/c/training flop, loss/eval_loss). Rows
      count as done when there is no status column.
    loss: the loss column to fit.
    params: the parameter count to fit (N or N_nonembedding).
  Returns:
    Columns name, N, D, C, loss, budget, note (how a missing D or C was derived, with
    C = 6 N D). `.attrs['excluded']` lists the rows left out: {'name', 'reason'};
    `.attrs['irreducible_loss']` is the data's known entropy when the table has one.
  Raises:
    ValueError: missing columns, duplicate names, NaN or non-positive values.
  """
  if not isinstance(table, pd.DataFrame):
    table = pd.read_csv(table)
  excluded = list(table.attrs.get('excluded', []))
  name_column = _column(table, 'name')
  names = (table[name_column].astype(str) if name_column
           else pd.Series([f'row {i}' for i in range(len(table))], index=table.index))
  duplicates = sorted(set(names[names.duplicated()]))
  if duplicates:
    raise ValueError(f'duplicate trial names: {", ".join(map(repr, duplicates))}')
  done = pd.Series(True, index=table.index)
  if _column(table, 'status'):
    done = table[_column(table, 'status')] == 'done'
    for i in table.index[~done]:
      excluded.append({'name': names[i], 'reason': _not_done_reason(table, i)})
  out = pd.DataFrame({'name': names, **_numbers(table, loss, params)})[done]
  _check(out, loss)
  out.attrs['excluded'] = excluded
  known = table['data_optimal_loss'][done].dropna() if 'data_optimal_loss' in table else []
  if len(known) and known.nunique() == 1:  # synthetic data: the true E, to judge the fit by
    out.attrs['irreducible_loss'] = float(known.iloc[0])
  return out.reset_index(drop=True)


def _column(table: pd.DataFrame, wanted: str) -> str | None:
  """The table's column for `wanted`: exact name, else any case-insensitive alias."""
  if wanted in table.columns:
    return wanted
  group = next((g for g in _ALIASES if wanted.lower() in g), {wanted.lower()})
  return next((c for c in table.columns if str(c).lower() in group), None)


def _not_done_reason(table: pd.DataFrame, i) -> str:
  reason = f'status {table.at[i, _column(table, "status")]}'
  error = table.at[i, 'error'] if 'error' in table.columns else None
  return f'{reason}: {error}' if isinstance(error, str) and error else reason


def _numbers(table: pd.DataFrame, loss: str, params: str) -> dict[str, pd.Series]:
  """N, D, C, loss, budget and note as float columns, deriving D or C from C = 6 N D."""
  def column(wanted, required):
    name = _column(table, wanted)
    if name is None and required:
      raise ValueError(f'no {wanted!r} column in the table (columns: {", ".join(table.columns)})')
    return (pd.to_numeric(table[name], errors='coerce').astype(float) if name
            else pd.Series(math.nan, index=table.index))
  n, d, c = column(params, True), column('D', False), column('C', False)
  if d.isna().all() and c.isna().all():
    raise ValueError('the table needs a D (tokens) or C (FLOPs) column')
  note = table['note'].fillna('') if 'note' in table.columns else pd.Series('', index=table.index)
  note[d.isna() & c.notna()] = 'D = C/(6N)'
  note[c.isna() & d.notna()] = 'C = 6ND'
  d, c = d.fillna(c / (6 * n)), c.fillna(6 * n * d)
  return {'N': n, 'D': d, 'C': c, 'loss': column(loss, True),
          'budget': column('budget', False), 'note': note}


def _check(pts: pd.DataFrame, loss: str) -> None:
  nan_loss = pts['name'][pts['loss'].isna()]
  if len(nan_loss):
    raise ValueError(f'NaN {loss} in finished trials: {", ".join(map(repr, nan_loss))}')
  for column in ('N', 'D', 'C', 'loss'):
    bad = pts[~(np.isfinite(pts[column]) & (pts[column] > 0))]
    if len(bad):
      row = bad.iloc[0]
      raise ValueError(f'{column} must be positive and finite; row {row["name"]!r} has '
                       f'{column}={row[column]}')
