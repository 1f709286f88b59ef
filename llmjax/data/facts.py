"""A synthetic language of facts with Zipf frequencies: a model's loss falls as a power of
both its size N and its training tokens D, towards an entropy known exactly.

Why this construction. A known-truth scaling check needs data whose loss follows
E + A/N^alpha + B/D^beta over the sweep's range. A table of facts seen with Zipf
frequencies has that shape (Hutter 2021, "Learning curve theory"): a fact is learned once
it has been seen often enough and the model has room for it, so the loss above the
entropy is the mass of the facts not yet learned. With frequencies p_k ~ k^-zipf, the
mass beyond rank k falls as k^(1 - zipf); training on D tokens reaches the rank where
p_k D is a few sightings, k ~ D^(1/zipf), and a model holds a number of facts that grows
with N. Both are power laws, and with `keys` far beyond what any budget sees or any
model stores, neither saturates inside the sweep (a small table, learned in one phase,
is what made the Markov chain of `synthetic.py` useless for this).

Construction (all of it drawn from `seed`). A document is doc_len / segment_len i.i.d.
segments; a segment is a key and its value:
  key    rank k in [0, keys) with P(k) = (k + 1)^-zipf / Z; its string is key_len tokens,
         the base-`key_symbols` digits of a random injective map of the ranks into the
         key_symbols^key_len strings (so frequent keys share no visible pattern).
  value  value_len tokens: option j in [0, options) with P(j) ∝ 2^-j, the same for every
         key; option j's first token is (f_k + j) mod value_symbols for a random f_k per
         key (distinct options), its other tokens a random string per (key, option).
Token ids: segment position i has its own block of ids (key positions `key_symbols` each,
then value positions `value_symbols` each), so a token's id tells its place in the
segment and the model need not count.

Exact entropy. By the chain rule a segment costs the Bayes predictor exactly
H(key) + H(option) nats, however the key's cost is spread over its tokens (the strings
are distinct, so the key string carries exactly the rank's entropy; the first value
token, given the key, names the option; the rest are determined). H(key) is summed over
the `keys` ranks in float64 and H(option) over `options` terms. Segments are
independent and every document starts at a segment boundary, so the first tokens of a
document are no special case: `optimal_loss` = `entropy_rate` =
(H(key) + H(option)) / segment_len nats per token, for a predictor that sees each row
from its start (doc_len = the row length seq_len, a multiple of segment_len).
`log_probs` is that predictor, token by token (key prefixes by their marginals).

Documents: document i is a pure function of (seed, offset + i); the held-out split is
another index range (llmjax.data.sources).
Spec: 'synthetic:kind=facts,keys=1048576,zipf=1.3,key_len=4,key_symbols=32,value_len=2,
value_symbols=32,options=3,seed=0,doc_len=60' (any subset after kind=facts).
"""

import dataclasses
import functools

import numpy as np

MAX_KEY_STRINGS = 2**24  # key_symbols^key_len: the string map is a permutation in memory


@dataclasses.dataclass(frozen=True)
class FactsSpec:
  kind: str = 'facts'
  keys: int = 2**20  # K: distinct facts
  zipf: float = 1.3  # s: P(rank k) ∝ (k + 1)^-s
  key_len: int = 4  # tokens per key
  key_symbols: int = 32  # ids per key position
  value_len: int = 2  # tokens per value
  value_symbols: int = 32  # ids per value position
  options: int = 3  # values a key can take, P(j) ∝ 2^-j
  seed: int = 0
  doc_len: int = 60  # tokens per document: a whole number of segments
  # Held-out documents: a scaling fit compares E with the exact entropy, so the eval set's
  # own sampling error (~0.3% of the loss at 1,024 documents of 60 tokens) must be small.
  eval_docs: int = 1024

  @property
  def segment_len(self) -> int:
    return self.key_len + self.value_len

  @property
  def vocab(self) -> int:
    """Symbols (ids 0 .. vocab - 1); end-of-text is one more."""
    return self.key_len * self.key_symbols + self.value_len * self.value_symbols


def problems(spec: FactsSpec) -> list[str]:
  """What makes a spec unusable, as sentences naming the keys."""
  found = []
  strings = spec.key_symbols ** spec.key_len
  if min(spec.key_len, spec.value_len, spec.key_symbols, spec.value_symbols) < 1:
    found.append('key_len, value_len, key_symbols and value_symbols must be >= 1')
  if strings > MAX_KEY_STRINGS:
    found.append(f'key_symbols^key_len = {strings} key strings; at most {MAX_KEY_STRINGS}')
  if not 1 <= spec.keys <= min(strings, MAX_KEY_STRINGS):
    found.append(f'keys={spec.keys} must be between 1 and key_symbols^key_len = {strings}')
  if not 1 <= spec.options <= spec.value_symbols:
    found.append(f'options={spec.options} must be between 1 and value_symbols')
  if spec.eval_docs < 1:
    found.append('eval_docs must be >= 1')
  if spec.zipf < 0:
    found.append('zipf must be >= 0')
  if spec.doc_len < spec.segment_len or spec.doc_len % spec.segment_len:
    found.append(f'doc_len={spec.doc_len} must be a multiple of key_len + value_len = '
                 f'{spec.segment_len} (documents are whole segments)')
  return found


def _entropy(p: np.ndarray) -> float:
  p = p[p > 0]
  return float(-np.sum(p * np.log(p)))


@dataclasses.dataclass(frozen=True)
class _Table:
  key_probs: np.ndarray  # (keys,) P(rank)
  key_cdf: np.ndarray
  key_string: np.ndarray  # (keys,) index of the rank's string in [0, key_symbols^key_len)
  first_value: np.ndarray  # (keys,) f_k
  rest_values: np.ndarray  # (keys, options, value_len - 1) the later value symbols
  option_probs: np.ndarray  # (options,)


@functools.lru_cache(maxsize=4)
def _table(spec: FactsSpec) -> _Table:
  """The language's random table (shared by a spec's train and eval sources)."""
  rng = np.random.default_rng([spec.seed, 0xFAC7])
  probs = np.arange(1, spec.keys + 1, dtype=np.float64) ** -spec.zipf
  probs /= probs.sum()
  strings = np.arange(spec.key_symbols ** spec.key_len, dtype=np.int32)
  rng.shuffle(strings)
  options = 0.5 ** np.arange(spec.options)
  rest = rng.integers(spec.value_symbols, size=(spec.keys, spec.options, spec.value_len - 1),
                      dtype=np.int32)
  return _Table(probs, np.cumsum(probs), strings[:spec.keys].copy(),
                rng.integers(spec.value_symbols, size=spec.keys, dtype=np.int32), rest,
                options / options.sum())


class FactsSource:
  """Random-access documents (token arrays) of the endless stream of facts."""

  endless = True  # i.i.d. documents: the pipeline neither shuffles nor counts epochs

  def __init__(self, spec: FactsSpec, num_docs: int = 2**31 - 1, offset: int = 0):
    self.spec, self._num_docs, self._offset = spec, num_docs, offset
    self.table = _table(spec)

  @property
  def key_entropy(self) -> float:
    return _entropy(self.table.key_probs)

  @property
  def option_entropy(self) -> float:
    return _entropy(self.table.option_probs)

  @property
  def entropy_rate(self) -> float:
    """Nats per token: (H(key) + H(option)) / segment_len (module docstring)."""
    return (self.key_entropy + self.option_entropy) / self.spec.segment_len

  @property
  def optimal_loss(self) -> float:
    """Bayes-optimal mean NLL per target; the first tokens cost no more (whole segments)."""
    return self.entropy_rate

  def segments(self, ranks: np.ndarray, options: np.ndarray) -> np.ndarray:
    """(n, segment_len) token ids of the facts (rank, option)."""
    spec, table = self.spec, self.table
    powers = spec.key_symbols ** np.arange(spec.key_len - 1, -1, -1)
    digits = (table.key_string[ranks][:, None] // powers) % spec.key_symbols
    key_ids = digits + spec.key_symbols * np.arange(spec.key_len)
    first = (table.first_value[ranks] + options) % spec.value_symbols
    values = np.concatenate([first[:, None], table.rest_values[ranks, options]], axis=1)
    value_ids = (values + spec.key_len * spec.key_symbols
                 + spec.value_symbols * np.arange(spec.value_len))
    return np.concatenate([key_ids, value_ids], axis=1).astype(np.int32)

  def draw(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` i.i.d. facts (ranks, options)."""
    table = self.table
    ranks = np.searchsorted(table.key_cdf, rng.random(count) * table.key_cdf[-1])
    options = np.searchsorted(np.cumsum(table.option_probs), rng.random(count))
    return (np.minimum(ranks, self.spec.keys - 1),
            np.minimum(options, self.spec.options - 1))

  def __len__(self) -> int:
    return self._num_docs

  def __getitem__(self, index: int) -> np.ndarray:
    rng = np.random.default_rng([self.spec.seed, self._offset + int(index)])
    ranks, options = self.draw(rng, self.spec.doc_len // self.spec.segment_len)
    return self.segments(ranks, options).ravel()

  @functools.cached_property
  def _prefix_probs(self) -> list[np.ndarray]:
    """P(the key's first i symbols), i = 0 .. key_len, each over the S^i prefixes."""
    spec, table = self.spec, self.table
    out = []
    for i in range(spec.key_len + 1):
      prefix = table.key_string // spec.key_symbols ** (spec.key_len - i)
      out.append(np.bincount(prefix, weights=table.key_probs, minlength=spec.key_symbols ** i))
    return out

  @functools.cached_property
  def _rank_of_string(self) -> np.ndarray:
    ranks = np.full(self.spec.key_symbols ** self.spec.key_len, -1, np.int64)
    ranks[self.table.key_string] = np.arange(self.spec.keys)
    return ranks

  def log_probs(self, doc: np.ndarray) -> np.ndarray:
    """log P(doc[t] | doc[:t]) under the true process, for every t of a whole-segment
    document: the Bayes predictor that knows the table (-inf where doc is impossible)."""
    spec, table = self.spec, self.table
    ids = np.asarray(doc, np.int64).reshape(-1, spec.segment_len)
    digits = ids[:, :spec.key_len] - spec.key_symbols * np.arange(spec.key_len)
    out = np.empty(ids.shape)
    prefix = np.zeros(len(ids), np.int64)
    with np.errstate(divide='ignore', invalid='ignore'):
      for i in range(spec.key_len):
        longer = prefix * spec.key_symbols + digits[:, i]
        out[:, i] = np.log(self._prefix_probs[i + 1][longer] / self._prefix_probs[i][prefix])
        prefix = longer
      ranks = self._rank_of_string[prefix]
      known = ranks >= 0
      ranks = np.where(known, ranks, 0)
      values = ids[:, spec.key_len:] - (spec.key_len * spec.key_symbols
                                        + spec.value_symbols * np.arange(spec.value_len))
      option = (values[:, 0] - table.first_value[ranks]) % spec.value_symbols
      valid = known & (option < spec.options)
      option = np.where(valid, option, 0)
      out[:, spec.key_len] = np.where(valid, np.log(table.option_probs[option]), -np.inf)
      rest_ok = np.all(values[:, 1:] == table.rest_values[ranks, option], axis=1) & valid
      out[:, spec.key_len + 1:] = np.where(rest_ok, 0.0, -np.inf)[:, None]
    return out.ravel()
