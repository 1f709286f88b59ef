"""Weight statistics per layer and per parameter kind: norms, RMS, singular value spectra,
per-head norms, and how the weights move between checkpoints.

A parameter's kind is its path without the layer axis ('attn.wq', 'mlp.w_in',
'embed.embedding'); stacked block parameters get one row per layer (`layer` 0..L-1), the
others layer -1. Spectra read each tensor as the matrix it applies: the model-width (embed)
axis on one side, every other axis flattened on the other (wq: D x NH, wo: NH x D).
"""

import jax
import numpy as np
import pandas as pd
from flax import nnx

from llmjax.model.transformer import Transformer


def _params(model_or_params) -> nnx.State:
  if isinstance(model_or_params, nnx.Module):
    return nnx.state(model_or_params, nnx.Param)
  return model_or_params


def tensors(model_or_params) -> list[tuple[str, int, str, np.ndarray, tuple]]:
  """(kind, layer, group, float32 array, logical axes) for every parameter, one entry per
  layer of stacked ones; group is the parametrization group (hidden, output, ...)."""
  out = []
  for path, var in _params(model_or_params).flat_state():
    kind = '.'.join(str(p) for p in path if p != 'blocks')
    axes = tuple(var.get_metadata().get('out_sharding') or ())
    group = var.get_metadata().get('group', '')
    value = np.asarray(jax.device_get(var.get_value()), np.float32)
    if axes and axes[0] == 'layers':
      out.extend((kind, i, group, value[i], axes[1:]) for i in range(value.shape[0]))
    else:
      out.append((kind, -1, group, value, axes))
  return out


def as_matrix(value: np.ndarray, axes: tuple) -> np.ndarray | None:
  """The 2-D matrix a tensor applies, or None for vectors: the embed axis on one side."""
  if value.ndim < 2:
    return None
  split = 1
  if 'embed' in axes and axes.index('embed') == len(axes) - 1:
    split = value.ndim - 1  # writes into the residual stream (wo, w_out, embeddings)
  return value.reshape(int(np.prod(value.shape[:split])), -1)


def singular_values(model_or_params, kind: str, layer: int = -1) -> np.ndarray:
  """Singular values (descending) of one parameter matrix, e.g. ('attn.wq', layer=0)."""
  found = [(v, a) for k, l, _, v, a in tensors(model_or_params) if k == kind and l == layer]
  if not found:
    kinds = sorted({k for k, *_ in tensors(model_or_params)})
    raise KeyError(f'no parameter {kind!r} at layer {layer}; kinds: {", ".join(kinds)}')
  matrix = as_matrix(*found[0])
  if matrix is None:
    raise ValueError(f'{kind!r} is a vector; it has no singular values')
  return np.linalg.svd(matrix, compute_uv=False)


def stats(model_or_params, spectra: bool = True) -> pd.DataFrame:
  """One row per parameter and layer: kind, layer, group, shape, size, Frobenius norm, RMS,
  mean, largest |value|, and for matrices (with `spectra`; an SVD each, seconds for
  matrices of width 4096) the spectral norm and stable rank (||W||_F^2 / ||W||_2^2)."""
  rows = []
  for kind, layer, group, value, axes in tensors(model_or_params):
    norm = float(np.linalg.norm(value))
    row = {'kind': kind, 'layer': layer, 'group': group, 'shape': value.shape,
           'size': value.size, 'norm': norm, 'rms': norm / np.sqrt(value.size),
           'mean': float(value.mean()), 'abs_max': float(np.abs(value).max()),
           'spectral_norm': np.nan, 'stable_rank': np.nan}
    matrix = as_matrix(value, axes)
    if spectra and matrix is not None:
      top = float(np.linalg.svd(matrix, compute_uv=False)[0])
      row.update(spectral_norm=top, stable_rank=norm**2 / max(top**2, 1e-30))
    rows.append(row)
  return pd.DataFrame(rows)


def changes(before, after) -> pd.DataFrame:
  """How each parameter moved from `before` to `after` (models or params of one
  architecture): norm of the difference, relative change ||after - before|| / ||before||,
  and the cosine between the two tensors."""
  old, new = tensors(before), tensors(after)
  if [(k, l, v.shape) for k, l, _, v, _ in old] != [(k, l, v.shape) for k, l, _, v, _ in new]:
    raise ValueError('the two models have different parameters; compare checkpoints of one '
                     'architecture')
  rows = []
  for (kind, layer, group, a, _), (_, _, _, b, _) in zip(old, new):
    delta, norm_a, norm_b = (float(np.linalg.norm(x)) for x in (b - a, a, b))
    rows.append({'kind': kind, 'layer': layer, 'group': group, 'delta_norm': delta,
                 'relative_change': delta / max(norm_a, 1e-30),
                 'cosine': float((a * b).sum()) / max(norm_a * norm_b, 1e-30)})
  return pd.DataFrame(rows)


def head_norms(model: Transformer) -> pd.DataFrame:
  """Per layer and attention head: Frobenius norms of its query, key, value and output
  weights (a kv head's key and value norms are repeated for its G query heads)."""
  attn = nnx.state(model.blocks.attn, nnx.Param)
  wq, wk, wv, wo = (np.asarray(jax.device_get(attn[name].get_value()), np.float32)
                    for name in ('wq', 'wk', 'wv', 'wo'))
  groups = model.cfg.num_groups
  per_head = {
      'wq': np.linalg.norm(wq, axis=(1, 3)),  # L D N H -> L N
      'wk': np.repeat(np.linalg.norm(wk, axis=(1, 3)), groups, axis=1),
      'wv': np.repeat(np.linalg.norm(wv, axis=(1, 3)), groups, axis=1),
      'wo': np.linalg.norm(wo, axis=(2, 3)),  # L N H D -> L N
  }
  layers, heads = np.indices(per_head['wq'].shape)
  return pd.DataFrame({'layer': layers.ravel(), 'head': heads.ravel(),
                       **{k: v.ravel() for k, v in per_head.items()}})
