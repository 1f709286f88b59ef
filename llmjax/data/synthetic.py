"""A synthetic language whose entropy is known exactly: a sparse random order-k Markov chain.

Construction (all of it drawn from `seed`). A context is the last k = `order` symbols of
V = `vocab`; there are C = V^k of them. Every context c has `branching` successors: the
symbol after its last one, (last + 1) mod V, which makes every context reach the same
cycle (so the chain has one recurrent class and one stationary distribution), and
branching - 1 others drawn without replacement with weights w_x = (x + 1)^-zipf (Gumbel
top-k). Their probabilities are Dirichlet(alpha) draws tilted by the same weights,
P(x | c) ∝ g_x w_x, so low symbols, and the contexts made of them, are frequent and the
others rare: context frequencies fall off like a power law, the setting in which
learning curves are power laws (Hutter 2021, "Learning curve theory"). A model must
memorize a table of about C x branching entries, most of them rare: a small model cannot
hold it and a large one needs many tokens to see the rare contexts.

Exact entropy. The stationary distribution pi over contexts solves pi = pi P, found by
power iteration of the lazy chain (pi + pi P) / 2 on the sparse (C, branching) table
(laziness removes periodicity; the iteration stops when pi changes by < 1e-13 in L1).
The entropy rate is h = sum_c pi(c) H(P(. | c)) nats per token.

Documents. Document i is a pure function of (seed, offset + i): its first k symbols are a
context drawn from pi, the rest follow the chain; the held-out split is another index
range (llmjax.data.sources). The Bayes-optimal predictor that sees a document from its
start pays H(pi) for its first k tokens together (they are one context drawn from pi:
token j < k is predicted from the marginal of pi given the tokens before it) and h for
each later one, so `optimal_loss` = (H(pi) + (doc_len - k) h) / doc_len per predicted
token. It holds for training rows that start at a document's start: keep doc_len equal
to the row length seq_len (or a divisor of it); a row cut from the middle of a document
loses its context and can only do worse.

Spec: 'synthetic:vocab=64,order=1,branching=4,alpha=1.0,zipf=0,seed=0,doc_len=512'
(any subset; order=1 with zipf=0 is the plain sparse chain). `kind=facts` selects the
other language, facts with Zipf frequencies (llmjax.data.facts), whose loss scales as a
power of model size and data; `parse_spec` reads both and `source` opens either.
"""

import dataclasses

import numpy as np

from llmjax.data import facts

MAX_CONTEXTS = 2**20  # C = vocab^order: the (C, branching) tables stay in memory


@dataclasses.dataclass(frozen=True)
class MarkovSpec:
  vocab: int = 64  # V: symbols
  order: int = 1  # k: symbols of context
  branching: int = 4  # successors per context
  alpha: float = 1.0  # Dirichlet concentration of the successor probabilities
  zipf: float = 0.0  # exponent of the symbol weights (x + 1)^-zipf; 0: uniform
  seed: int = 0
  doc_len: int = 512  # tokens per document


LANGUAGES = {'markov': MarkovSpec, 'facts': facts.FactsSpec}


def parse_spec(text: str) -> 'MarkovSpec | facts.FactsSpec':
  """'vocab=64,branching=4' -> MarkovSpec, 'kind=facts,keys=1000' -> facts.FactsSpec;
  errors name the unknown or bad key."""
  values = dict(item.partition('=')[::2] for item in filter(None, text.split(',')))
  kind = values.get('kind', 'markov')
  if kind not in LANGUAGES:
    raise ValueError(f'synthetic source: unknown kind {kind!r}; known: {", ".join(LANGUAGES)}')
  values.pop('kind', None)
  spec = LANGUAGES[kind](**_numbers(values, LANGUAGES[kind]))
  found = facts.problems(spec) if kind == 'facts' else _markov_problems(spec)
  if found:
    raise ValueError(f'synthetic source: {"; ".join(found)}; got {spec}')
  return spec


def _numbers(values: dict[str, str], spec_class) -> dict:
  fields = {f.name: f.type for f in dataclasses.fields(spec_class) if f.name != 'kind'}
  out = {}
  for key, value in values.items():
    if key not in fields:
      raise ValueError(f'synthetic source: unknown key {key!r}; known: kind, {", ".join(fields)}')
    try:
      out[key] = float(value) if fields[key] in (float, 'float') else int(value)
    except ValueError:
      raise ValueError(f'synthetic source: {key}={value!r} is not a number') from None
  return out


def _markov_problems(spec: MarkovSpec) -> list[str]:
  found = []
  if not (2 <= spec.branching <= spec.vocab and spec.alpha > 0 and spec.doc_len >= 2):
    found.append('need 2 <= branching <= vocab, alpha > 0, doc_len >= 2')
  if not (1 <= spec.order < spec.doc_len and spec.zipf >= 0):
    found.append('need 1 <= order < doc_len and zipf >= 0')
  if not found and spec.vocab ** spec.order > MAX_CONTEXTS:
    found.append(f'vocab^order = {spec.vocab ** spec.order} contexts; at most {MAX_CONTEXTS}')
  return found


def source(spec, num_docs: int = 2**31 - 1, offset: int = 0):
  """The document source of a parsed spec (MarkovSource or facts.FactsSource)."""
  cls = facts.FactsSource if isinstance(spec, facts.FactsSpec) else MarkovSource
  return cls(spec, num_docs=num_docs, offset=offset)


def _draw_table(spec: MarkovSpec) -> tuple[np.ndarray, np.ndarray]:
  """(successors, probabilities), both (C, branching): the chain's sparse table."""
  rng = np.random.default_rng(spec.seed)
  v, b = spec.vocab, spec.branching
  contexts = v ** spec.order
  log_w = -spec.zipf * np.log1p(np.arange(v))
  forced = (np.arange(contexts) % v + 1) % v  # (last symbol + 1) mod V
  # Gumbel top-k: sampling without replacement with weights w, all contexts at once.
  keys = log_w + rng.gumbel(size=(contexts, v))
  keys[np.arange(contexts), forced] = -np.inf
  others = np.argsort(-keys, axis=1)[:, :b - 1]
  successors = np.concatenate([forced[:, None], others], axis=1)
  weights = rng.gamma(spec.alpha, size=(contexts, b)) * np.exp(log_w[successors])
  # Dirichlet draws with small alpha can underflow to 0: keep every successor possible.
  weights = np.maximum(weights, 1e-12 * weights.max(1, keepdims=True))
  return successors.astype(np.int32), weights / weights.sum(1, keepdims=True)


def _stationary(next_context: np.ndarray, probs: np.ndarray, tol: float = 1e-13,
                max_iter: int = 200_000) -> np.ndarray:
  """pi = pi P by power iteration of the lazy chain on the sparse table."""
  contexts = len(probs)
  pi = np.full(contexts, 1.0 / contexts)
  flat_next = next_context.ravel()
  for _ in range(max_iter):
    moved = np.bincount(flat_next, weights=(pi[:, None] * probs).ravel(), minlength=contexts)
    new = 0.5 * (pi + moved)
    if np.abs(new - pi).sum() < tol:
      return new / new.sum()
    pi = new
  raise RuntimeError(f'synthetic source: stationary distribution did not converge in '
                     f'{max_iter} iterations')


def _entropy(p: np.ndarray, axis=None) -> np.ndarray:
  return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=axis)


class MarkovSource:
  """Random-access documents (token arrays) of an infinite order-k Markov stream."""

  endless = True  # i.i.d. documents: the pipeline neither shuffles nor counts epochs

  def __init__(self, spec: MarkovSpec, num_docs: int = 2**31 - 1, offset: int = 0):
    if not isinstance(spec, MarkovSpec):
      raise ValueError(f'this needs the synthetic Markov language; got kind={spec.kind}')
    self.spec, self._num_docs, self._offset = spec, num_docs, offset
    self.successors, self.probs = _draw_table(spec)
    self.num_contexts = len(self.probs)
    self.next_context = ((np.arange(self.num_contexts)[:, None] * spec.vocab + self.successors)
                         % self.num_contexts)
    self._cumulative = np.cumsum(self.probs, axis=1)
    self.stationary = _stationary(self.next_context, self.probs)  # over contexts
    self._stationary_cdf = np.cumsum(self.stationary)

  @property
  def transitions(self) -> np.ndarray:
    """The dense (C, V) table P(next symbol | context); for order 1 the (V, V) matrix."""
    dense = np.zeros((self.num_contexts, self.spec.vocab))
    np.put_along_axis(dense, self.successors.astype(np.int64), self.probs, axis=1)
    return dense

  @property
  def entropy_rate(self) -> float:
    """Nats per token of the stationary chain: sum_c pi(c) H(P(. | c))."""
    return float(self.stationary @ _entropy(self.probs, axis=1))

  @property
  def optimal_loss(self) -> float:
    """Bayes-optimal mean NLL per target of a document (see the module docstring)."""
    k, n = self.spec.order, self.spec.doc_len
    return (float(_entropy(self.stationary)) + (n - k) * self.entropy_rate) / n

  def context_of(self, symbols) -> int:
    """The context index of k symbols, oldest first."""
    c = 0
    for s in symbols:
      c = c * self.spec.vocab + int(s)
    return c

  def log_probs(self, doc: np.ndarray) -> np.ndarray:
    """log P(doc[t] | doc[:t]) under the true process, for every t (the Bayes predictor:
    marginals of pi for the first k tokens, the table after)."""
    k, v = self.spec.order, self.spec.vocab
    joint = self.stationary.reshape((v,) * k)
    out = np.empty(len(doc))
    for t in range(min(k, len(doc))):  # P(x_t | x_<t) from pi's marginal of k - t.. symbols
      marginal = joint.sum(axis=tuple(range(t + 1, k)))
      out[t] = np.log(marginal[tuple(doc[:t + 1])] / marginal[tuple(doc[:t])].sum())
    if len(doc) > k:
      windows = np.lib.stride_tricks.sliding_window_view(np.asarray(doc, np.int64), k)[:-1]
      c = windows @ (v ** np.arange(k - 1, -1, -1))  # (T - k,) context of each later token
      hit = self.successors[c] == np.asarray(doc[k:])[:, None]
      out[k:] = np.log(np.sum(self.probs[c] * hit, axis=1))
    return out

  def __len__(self) -> int:
    return self._num_docs

  def __getitem__(self, index: int) -> np.ndarray:
    spec = self.spec
    rng = np.random.default_rng([spec.seed, self._offset + int(index)])
    u = rng.random(spec.doc_len - spec.order + 1)
    c = min(int(np.searchsorted(self._stationary_cdf, u[0])), self.num_contexts - 1)
    tokens = np.empty(spec.doc_len, np.int32)
    tokens[:spec.order] = np.unravel_index(c, (spec.vocab,) * spec.order)
    successors, cumulative, next_context = self.successors, self._cumulative, self.next_context
    for t in range(spec.order, spec.doc_len):
      j = min(int(np.searchsorted(cumulative[c], u[t - spec.order + 1])), spec.branching - 1)
      tokens[t] = successors[c, j]
      c = next_context[c, j]
    return tokens


class SyntheticTokenizer:
  """Token ids are the chain's symbols; one extra id is end-of-text. A 'byte' is a token."""

  def __init__(self, vocab: int):
    self.vocab_size, self.eot_id = vocab + 1, vocab
    self.token_bytes = np.array([1] * vocab + [0], np.int32)

  def encode(self, tokens) -> np.ndarray:
    """Symbol ids; text is read as space-separated ids ('3 17 4'), the format of `decode`."""
    if isinstance(tokens, str):
      try:
        tokens = [int(t) for t in tokens.split()]
      except ValueError:
        raise ValueError(f'synthetic tokens are written as space-separated state ids, like '
                         f'"3 17 4"; got {tokens!r}') from None
    return np.asarray(tokens, np.int32)

  def decode(self, ids) -> str:
    return ' '.join(str(int(i)) for i in ids)
