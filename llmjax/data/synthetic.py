"""A synthetic language whose entropy is known exactly: a sparse random Markov chain.

Each of V states moves to `branching` successors (one of them s+1 mod V, so the
chain is irreducible) with Dirichlet(alpha) probabilities; all of it drawn from
`seed`. Documents are `doc_len` tokens started from the stationary distribution.
A model of these documents cannot do better than `optimal_loss` nats per
predicted token, the known irreducible loss E of a scaling-law fit.

Spec: 'synthetic:vocab=64,branching=4,alpha=1.0,seed=0,doc_len=512' (any subset).
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class MarkovSpec:
  vocab: int = 64
  branching: int = 4
  alpha: float = 1.0
  seed: int = 0
  doc_len: int = 512


def parse_spec(text: str) -> MarkovSpec:
  """'vocab=64,branching=4' -> MarkovSpec; errors name the unknown or bad key."""
  fields = {f.name: f.type for f in dataclasses.fields(MarkovSpec)}
  values = {}
  for item in filter(None, text.split(',')):
    key, _, value = item.partition('=')
    if key not in fields:
      raise ValueError(f'synthetic source: unknown key {key!r}; known: {", ".join(fields)}')
    try:
      values[key] = float(value) if fields[key] in (float, 'float') else int(value)
    except ValueError:
      raise ValueError(f'synthetic source: {key}={value!r} is not a number') from None
  spec = MarkovSpec(**values)
  if not (2 <= spec.branching <= spec.vocab and spec.alpha > 0 and spec.doc_len >= 2):
    raise ValueError(f'synthetic source: need 2 <= branching <= vocab, alpha > 0, '
                     f'doc_len >= 2; got {spec}')
  return spec


class MarkovSource:
  """Random-access documents (token arrays) of an infinite Markov stream."""

  endless = True  # i.i.d. documents: the pipeline neither shuffles nor counts epochs

  def __init__(self, spec: MarkovSpec, num_docs: int = 2**31 - 1, offset: int = 0):
    self.spec, self._num_docs, self._offset = spec, num_docs, offset
    rng = np.random.default_rng(spec.seed)
    v = spec.vocab
    self.transitions = np.zeros((v, v))
    for s in range(v):
      others = rng.choice(np.delete(np.arange(v), (s + 1) % v), spec.branching - 1, replace=False)
      successors = np.concatenate([[(s + 1) % v], others])
      self.transitions[s, successors] = rng.dirichlet(np.full(spec.branching, spec.alpha))
    self._cumulative = np.cumsum(self.transitions, axis=1)
    eigvals, eigvecs = np.linalg.eig(self.transitions.T)
    stationary = np.real(eigvecs[:, np.argmin(np.abs(eigvals - 1.0))])
    self.stationary = stationary / stationary.sum()

  @property
  def entropy_rate(self) -> float:
    """Nats per token of the stationary chain: sum_s pi(s) H(P(. | s))."""
    p = self.transitions
    row_entropy = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=1)
    return float(self.stationary @ row_entropy)

  @property
  def optimal_loss(self) -> float:
    """Best achievable mean NLL per target of a document: its first token has the
    stationary entropy, the other doc_len - 1 the entropy rate."""
    pi = self.stationary[self.stationary > 0]
    first = float(-np.sum(pi * np.log(pi)))
    n = self.spec.doc_len
    return (first + (n - 1) * self.entropy_rate) / n

  def __len__(self) -> int:
    return self._num_docs

  def __getitem__(self, index: int) -> np.ndarray:
    rng = np.random.default_rng([self.spec.seed, self._offset + int(index)])
    u = rng.random(self.spec.doc_len)
    tokens = np.empty(self.spec.doc_len, np.int32)
    state = int(np.searchsorted(np.cumsum(self.stationary), u[0]))
    tokens[0] = min(state, self.spec.vocab - 1)
    for t in range(1, self.spec.doc_len):
      state = int(np.searchsorted(self._cumulative[tokens[t - 1]], u[t]))
      tokens[t] = min(state, self.spec.vocab - 1)
    return tokens


class SyntheticTokenizer:
  """Token ids are the chain's states; one extra id is end-of-text. A 'byte' is a token."""

  def __init__(self, vocab: int):
    self.vocab_size, self.eot_id = vocab + 1, vocab
    self.token_bytes = np.array([1] * vocab + [0], np.int32)

  def encode(self, tokens) -> np.ndarray:
    """State ids; text is read as space-separated ids ('3 17 4'), the format of `decode`."""
    if isinstance(tokens, str):
      try:
        tokens = [int(t) for t in tokens.split()]
      except ValueError:
        raise ValueError(f'synthetic tokens are written as space-separated state ids, like '
                         f'"3 17 4"; got {tokens!r}') from None
    return np.asarray(tokens, np.int32)

  def decode(self, ids) -> str:
    return ' '.join(str(int(i)) for i in ids)
