"""Denoising objectives for encoders and encoder-decoders: masked LM (BERT) and span
corruption (T5), as pure functions of (token ids, seed, example index).

Both are deterministic per (seed, example index): the random generator of an example is
`np.random.default_rng([seed, index])`, so a resumed run and every model of a sweep see the
same masks, and no generator state needs checkpointing.

Masked LM (Devlin et al. 2019, Section 3.1): a `rate` share of the eligible tokens (all but
the special ones) is selected, with the count rounded at random so that its expectation is
exact for every length. Of the selected tokens, `mask_fraction` become the mask token,
`random_fraction` a uniformly drawn ordinary token, and the rest stay as they are. Targets
are the original tokens; the loss weight is 1 at selected positions only.

Span corruption (Raffel et al. 2020, Section 3.1.4): `noise_density` of the tokens, in
spans of mean length `mean_span`, are removed; each span is replaced in the input by one
sentinel (the first span by `sentinels[0]`, and so on), and the target is each sentinel
followed by its span, then end-of-text. Span lengths are a random composition of the noise
tokens into `num_spans` positive parts (and likewise the kept tokens), the input starting
with kept tokens, as T5 draws them. `span_lengths` is T5's length arithmetic: the longest
raw example whose input (and target) fit given row lengths.
"""

import dataclasses

import numpy as np


class ObjectiveError(ValueError):
  """An objective that cannot be applied as configured; says what to change."""


@dataclasses.dataclass(frozen=True)
class MaskedLM:
  mask_id: int  # the tokenizer's mask token
  vocab_size: int  # random replacements are drawn from ids below this, special ones excluded
  special_ids: tuple[int, ...]  # never selected, never drawn (end-of-text, mask, ...)
  rate: float = 0.15
  mask_fraction: float = 0.8
  random_fraction: float = 0.1

  def __post_init__(self):
    if not 0.0 < self.rate < 1.0:
      raise ObjectiveError(f'masked LM rate={self.rate} must be in (0, 1)')
    if min(self.mask_fraction, self.random_fraction) < 0 or (
        self.mask_fraction + self.random_fraction > 1.0):
      raise ObjectiveError(f'masked LM mask_fraction={self.mask_fraction} and random_fraction='
                           f'{self.random_fraction} must be >= 0 and sum to at most 1')
    if not 0 <= self.mask_id < self.vocab_size:
      raise ObjectiveError(f'mask token id {self.mask_id} is outside the vocabulary of '
                           f'{self.vocab_size}')

  def __call__(self, ids: np.ndarray, seed: int, index: int) -> dict[str, np.ndarray]:
    """ids (T,) -> {'inputs', 'targets' (the original ids), 'weights' (1 where selected)}."""
    rng = np.random.default_rng([seed, index])
    ids = np.asarray(ids, np.int32)
    eligible = np.flatnonzero(~np.isin(ids, self.special_ids))
    expected = self.rate * len(eligible)
    count = int(expected) + int(rng.random() < expected - int(expected))
    chosen = rng.choice(eligible, size=count, replace=False)
    how = rng.random(count)
    inputs = ids.copy()
    masked = chosen[how < self.mask_fraction]
    randomized = chosen[(how >= self.mask_fraction)
                        & (how < self.mask_fraction + self.random_fraction)]
    inputs[masked] = self.mask_id
    inputs[randomized] = rng.choice(self._ordinary_ids(), size=len(randomized))
    weights = np.zeros(len(ids), np.float32)
    weights[chosen] = 1.0
    return {'inputs': inputs, 'targets': ids, 'weights': weights}

  def _ordinary_ids(self) -> np.ndarray:
    return np.setdiff1d(np.arange(self.vocab_size), np.asarray(self.special_ids))


@dataclasses.dataclass(frozen=True)
class SpanCorruption:
  sentinels: tuple[int, ...]  # sentinel token ids, one per span (T5: <extra_id_0>, ...)
  eot_id: int  # ends every target
  noise_density: float = 0.15
  mean_span: float = 3.0

  def __post_init__(self):
    if not 0.0 < self.noise_density < 1.0:
      raise ObjectiveError(f'span corruption noise_density={self.noise_density} must be in '
                           f'(0, 1)')
    if self.mean_span < 1.0:
      raise ObjectiveError(f'span corruption mean_span={self.mean_span} must be >= 1')

  def num_spans(self, length: int) -> tuple[int, int]:
    """(noise tokens, spans) of an example of `length` tokens, as T5 counts them."""
    noise = min(max(int(round(length * self.noise_density)), 1), length - 1)
    return noise, max(int(round(noise / self.mean_span)), 1)

  def __call__(self, ids: np.ndarray, seed: int, index: int) -> dict[str, np.ndarray]:
    """ids (n >= 2,) -> {'inputs', 'targets'}: kept tokens with a sentinel per span, then
    end-of-text; sentinels each followed by their span, then end-of-text."""
    ids = np.asarray(ids, np.int32)
    if len(ids) < 2:
      raise ObjectiveError(f'span corruption needs at least 2 tokens, got {len(ids)}')
    noise, spans = self.num_spans(len(ids))
    if spans > len(self.sentinels):
      raise ObjectiveError(f'{spans} noise spans but only {len(self.sentinels)} sentinel '
                           f'tokens; use a tokenizer with more sentinels or shorter rows')
    rng = np.random.default_rng([seed, index])
    kept_lengths = _composition(len(ids) - noise, spans, rng)
    noise_lengths = _composition(noise, spans, rng)
    inputs, targets, start = [], [], 0
    for sentinel, kept, span in zip(self.sentinels, kept_lengths, noise_lengths):
      inputs += [*ids[start:start + kept], sentinel]
      targets += [sentinel, *ids[start + kept:start + kept + span]]
      start += kept + span
    return {'inputs': np.array(inputs + [self.eot_id], np.int32),
            'targets': np.array(targets + [self.eot_id], np.int32)}

  def span_lengths(self, input_length: int) -> tuple[int, int]:
    """(raw tokens, target length): the longest raw example whose corrupted input holds at
    most `input_length` tokens, and the length of its target."""
    best = None
    for raw in range(2, 2 * input_length + 2):  # rounding makes the input length only nearly
      noise, spans = self.num_spans(raw)        # monotone in raw: look at every candidate
      if raw - noise + spans + 1 <= input_length:
        best = (raw, noise + spans + 1)
    if best is None:
      raise ObjectiveError(f'span corruption: no example fits an input of {input_length} tokens')
    return best


def _composition(total: int, parts: int, rng: np.random.Generator) -> np.ndarray:
  """`total` split into `parts` positive integers, uniformly over all such splits."""
  if parts == 1:
    return np.array([total])
  if total < parts:
    raise ObjectiveError(f'cannot split {total} tokens into {parts} non-empty spans')
  cuts = np.sort(rng.choice(np.arange(1, total), size=parts - 1, replace=False))
  return np.diff(np.concatenate([[0], cuts, [total]]))


def uncorrupt(inputs: np.ndarray, targets: np.ndarray, sentinels: tuple[int, ...],
              eot_id: int) -> np.ndarray:
  """The original ids of a span-corrupted (inputs, targets) pair: each sentinel of the input
  replaced by its span from the target."""
  spans, current = {}, None
  for token in targets[:-1] if targets[-1] == eot_id else targets:
    if token in sentinels:
      current = int(token)
      spans[current] = []
    else:
      spans[current].append(int(token))
  out = []
  for token in inputs[:-1] if inputs[-1] == eot_id else inputs:
    out += spans[int(token)] if token in sentinels else [int(token)]
  return np.array(out, np.int32)
