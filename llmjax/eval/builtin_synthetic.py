"""Built-in tasks in the synthetic Markov language, with exact Bayes-optimal ceilings.

Examples are token ids (`context_tokens`, `choices_tokens`; the text fields hold the same
ids written as `SyntheticTokenizer.decode` writes them). Every document comes from the
chain's held-out index range: TASK_OFFSET and above, far from training's documents
(0 .. 2^31) and from the eval split's (2^40 ..), so no example was ever trained on. A
context starts with end-of-text, as every training document does.

  synthetic_continuation  a document's first `context_len` tokens; choices: its true next
      `continuation_len` tokens and the same window of other documents. The Bayes
      decision needs only the first k (= order) tokens u of a choice: choice i is the true
      one with posterior proportional to s(u_i) = P(u_i | context) / pi(u_i) (the tokens
      after u have the same probability either way, and a window of another document is
      a draw from the stationary chain).
  synthetic_chain  which of `num_choices` sequences of `length` tokens (a document's start)
      the run's chain produced; the others come from the chain of another seed, and the
      Bayes decision is the largest likelihood ratio s(x) = P(x) / Q(x).

Both ceilings have the form: the true choice has score S ~ F (the true distribution), each
of the m = num_choices - 1 others an independent score ~ G, ties are broken at random, so
P(correct) = E_F[sum_t C(m, t) a^t b^(m-t) / (t + 1)] = E_F[((a + b)^(m+1) - b^(m+1)) /
((m + 1) a)] with a = G(score = S), b = G(score < S); `_win_probability` computes it over
the exact, finite score distributions (contexts x first blocks, or whole sequences of the
two chains' supports). Chance is 1 / num_choices.
"""

import dataclasses

import numpy as np

from llmjax.data import synthetic
from llmjax.eval.tasks import Task

TASK_OFFSET = 2**41  # first held-out document index used by tasks (seed s: + s * 2^32)
MAX_EXACT_CONTEXTS = 2048  # C = vocab^order: the continuation ceiling uses dense C x C tables
MAX_EXACT_SEQUENCES = 2**22  # per chain: the chain ceiling enumerates its support
SCORE_DECIMALS = 9  # log-scores equal to this many decimals are ties


def parse(spec: str) -> synthetic.MarkovSpec:
  """'synthetic:vocab=64,...' (or the part after 'synthetic:') -> MarkovSpec; ValueError
  for another synthetic language, whose documents these tasks cannot draw or score."""
  parsed = synthetic.parse_spec(spec.removeprefix('synthetic:'))
  if not isinstance(parsed, synthetic.MarkovSpec):
    raise ValueError(f'the synthetic tasks read a Markov chain; {spec!r} is a '
                     f'{type(parsed).__name__} language')
  return parsed


def applies(spec: str) -> bool:
  """Whether these tasks can be made for a run on `spec` (a Markov-chain language)."""
  try:
    parse(spec)
  except ValueError:
    return False
  return True


def _documents(spec: synthetic.MarkovSpec, length: int, count: int, seed: int) -> tuple:
  """(source, documents, their global indices): `count` held-out documents of `length`."""
  source = synthetic.MarkovSource(dataclasses.replace(spec, doc_len=length), num_docs=count,
                                  offset=TASK_OFFSET + seed * 2**32)
  indices = [TASK_OFFSET + seed * 2**32 + i for i in range(count)]
  return source, [source[i] for i in range(count)], indices


def _win_probability(true_scores, true_weights, other_scores, other_weights,
                     num_choices: int) -> float:
  """P(the true choice wins) for the score distributions F (true) and G (each other)."""
  m = num_choices - 1
  s = np.round(np.asarray(other_scores, np.float64), SCORE_DECIMALS)
  order = np.argsort(s)
  s, w = s[order], np.asarray(other_weights, np.float64)[order]
  cumulative = np.concatenate([[0.0], np.cumsum(w)])
  t = np.round(np.asarray(true_scores, np.float64), SCORE_DECIMALS)
  below = cumulative[np.searchsorted(s, t, side='left')]
  equal = cumulative[np.searchsorted(s, t, side='right')] - below
  safe = np.where(equal > 0, equal, 1.0)
  win = np.where(equal > 0, ((equal + below) ** (m + 1) - below ** (m + 1)) / ((m + 1) * safe),
                 below ** m)
  return float(np.sum(np.asarray(true_weights) * win))


def continuation_ceiling(source: synthetic.MarkovSource, num_choices: int) -> float:
  """Exact Bayes-optimal accuracy of synthetic_continuation (module docstring)."""
  contexts, k = source.num_contexts, source.spec.order
  if contexts > MAX_EXACT_CONTEXTS:
    raise ValueError(f'synthetic_continuation: the exact ceiling needs vocab^order <= '
                     f'{MAX_EXACT_CONTEXTS}, got {contexts}')
  step = np.zeros((contexts, contexts))
  np.add.at(step, (np.repeat(np.arange(contexts), source.spec.branching),
                   source.next_context.ravel()), source.probs.ravel())
  ahead = np.linalg.matrix_power(step, k)  # P(next k symbols = block u | context c)
  pi = source.stationary
  possible = pi > 0
  total = 0.0
  for c in np.flatnonzero(possible):
    scores = np.full(contexts, -np.inf)
    scores[possible] = np.log(np.maximum(ahead[c, possible], 1e-300)) - np.log(pi[possible])
    scores[possible & (ahead[c] == 0)] = -np.inf
    total += pi[c] * _win_probability(scores, ahead[c], scores, pi, num_choices)
  return float(total)


def _support(source: synthetic.MarkovSource, length: int) -> np.ndarray:
  """Every sequence of `length` tokens the chain can start a document with, (M, length)."""
  k, v = source.spec.order, source.spec.vocab
  starts = np.flatnonzero(source.stationary > 0)
  if len(starts) * source.spec.branching ** (length - k) > MAX_EXACT_SEQUENCES:
    raise ValueError(f'synthetic_chain: the exact ceiling enumerates more than '
                     f'{MAX_EXACT_SEQUENCES} sequences; use a shorter length')
  seqs = np.stack(np.unravel_index(starts, (v,) * k), axis=1)
  contexts = starts
  for _ in range(length - k):
    nxt = source.successors[contexts]  # (M, branching)
    seqs = np.concatenate([np.repeat(seqs, source.spec.branching, axis=0), nxt.reshape(-1, 1)],
                          axis=1)
    contexts = source.next_context[contexts].reshape(-1)
  return seqs


def sequence_log_probs(source: synthetic.MarkovSource, seqs: np.ndarray) -> np.ndarray:
  """log P(x) of document starts x (rows of `seqs`) under the chain; -inf if impossible."""
  k, v = source.spec.order, source.spec.vocab
  weights = v ** np.arange(k - 1, -1, -1)
  with np.errstate(divide='ignore'):
    log_pi, log_step = np.log(source.stationary), np.log(source.transitions)
  out = log_pi[seqs[:, :k] @ weights]
  for t in range(k, seqs.shape[1]):
    out = out + log_step[seqs[:, t - k:t] @ weights, seqs[:, t]]
  return out


def chain_ceiling(true: synthetic.MarkovSource, other: synthetic.MarkovSource, length: int,
                  num_choices: int) -> float:
  """Exact Bayes-optimal accuracy of synthetic_chain (module docstring)."""
  def scores(seqs):
    with np.errstate(invalid='ignore'):
      return sequence_log_probs(true, seqs) - sequence_log_probs(other, seqs)
  mine, theirs = _support(true, length), _support(other, length)
  return _win_probability(scores(mine), np.exp(sequence_log_probs(true, mine)),
                          scores(theirs), np.exp(sequence_log_probs(other, theirs)),
                          num_choices)


def _mc_example(name: str, eot: int, context: list[int], choices: list[list[int]], gold: int,
                docs: list[int]) -> dict:
  text = lambda ids: ' '.join(str(int(i)) for i in ids)
  return {'id': name, 'domain': 'synthetic', 'source': f'synthetic docs {docs}',
          'doc_indices': docs, 'context': text([eot] + context),
          'context_tokens': [eot] + [int(i) for i in context],
          'choices': [text(c) for c in choices],
          'choices_tokens': [[int(i) for i in c] for c in choices], 'gold': gold}


def synthetic_continuation(spec: str = 'synthetic:', seed: int = 0, max_examples: int = 500,
                           context_len: int = 16, continuation_len: int = 4,
                           num_choices: int = 4) -> Task:
  chain = parse(spec)
  if not chain.order < context_len:
    raise ValueError(f'synthetic_continuation: context_len={context_len} must exceed the '
                     f'order {chain.order}')
  source, docs, indices = _documents(chain, context_len + continuation_len,
                                     max_examples * num_choices, seed)
  rng = np.random.default_rng([seed, 0x5c0])
  examples = []
  for i in range(max_examples):
    group = list(range(i * num_choices, (i + 1) * num_choices))  # group[0]: the context's
    windows = [docs[j][context_len:] for j in group]
    gold = int(rng.integers(num_choices))
    windows[0], windows[gold] = windows[gold], windows[0]
    examples.append(_mc_example(f'synthetic_continuation-{i}', source.spec.vocab,
                                list(docs[group[0]][:context_len]), windows, gold,
                                [indices[j] for j in group]))
  chance = 1 / num_choices
  return Task(name='synthetic_continuation', kind='multiple_choice', examples=tuple(examples),
              ceiling={'acc': float(continuation_ceiling(source, num_choices))},
              chance={'acc': chance, 'acc_norm': chance},
              description='the true continuation of a held-out document among windows of '
                          'other documents; ceiling: the exact Bayes-optimal accuracy')


def synthetic_chain(spec: str = 'synthetic:', seed: int = 0, max_examples: int = 500,
                    length: int = 0, num_choices: int = 4, other_seed: int = -1) -> Task:
  """`length` 0: order + 1 tokens (one transition after the first context); `other_seed`
  -1: the run's chain seed + 1."""
  chain = parse(spec)
  length = length or chain.order + 1
  if length < chain.order:
    raise ValueError(f'synthetic_chain: length={length} is shorter than the order {chain.order}')
  other_spec = dataclasses.replace(chain, seed=chain.seed + 1 if other_seed < 0 else other_seed)
  if other_spec.seed == chain.seed:
    raise ValueError('synthetic_chain: other_seed must differ from the chain seed')
  true, mine, indices = _documents(chain, length, max_examples, seed)
  other, theirs, other_indices = _documents(other_spec, length, max_examples * (num_choices - 1),
                                            seed)
  rng = np.random.default_rng([seed, 0xc4a1])
  examples = []
  for i in range(max_examples):
    group = range(i * (num_choices - 1), (i + 1) * (num_choices - 1))
    choices = [list(theirs[j]) for j in group]
    gold = int(rng.integers(num_choices))
    choices.insert(gold, list(mine[i]))
    examples.append(_mc_example(f'synthetic_chain-{i}', chain.vocab, [], choices, gold,
                                [indices[i]] + [other_indices[j] for j in group]))
  chance = 1 / num_choices
  return Task(name='synthetic_chain', kind='multiple_choice', examples=tuple(examples),
              ceiling={'acc': chain_ceiling(true, other, length, num_choices)},
              chance={'acc': chance, 'acc_norm': chance},
              description=f'which of {num_choices} sequences the run\'s chain produced (the '
                          f'others: the chain of seed {other_spec.seed}); ceiling: exact Bayes')
