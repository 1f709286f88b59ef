"""Generation with a static KV cache, and scoring of continuations.

The command line (`python -m llmjax.generate`) is in `cli.py`; an encoder-decoder's
generation (encoder once, then this decode loop) is in `seq2seq.py`.

`generate` pads the prompts (left or right: the cache records each slot's position, so
both give the same tokens), runs one prefill over them, then decodes inside a
`lax.while_loop` on device until every row has stopped. Shapes are bucketed so that one
compilation serves many calls: the batch is rounded up to a power of two, the prompt length
and the new-token capacity to powers of two of at least 16 (the prompt length at most
max_len); sampling settings, seeds and budgets are traced values, not compile-time ones.
`stream` decodes the same way in chunks of a few tokens per call, for printing as it goes.

A row may generate `max_new_tokens`, clipped (with a warning) to what fits in the context:
prompt plus new tokens stay within max_len. A prompt must hold 1 to max_len - 1 tokens.
"""

import dataclasses
import functools
import warnings
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from llmjax.model.attention import KVCache
from llmjax.model.config import ModelConfig
from llmjax.model.transformer import Memory, Transformer

Prompts = Sequence[Sequence[int]] | np.ndarray


@dataclasses.dataclass
class GenerationOutput:
  tokens: list[np.ndarray]  # new tokens of each row, up to and including a stop token
  logprobs: list[np.ndarray] | None  # log p of each new token under the model (raw logits)
  # ... and under the distribution it was drawn from (temperature, top-k, top-p): 0 if greedy
  sampling_logprobs: list[np.ndarray] | None
  finished: np.ndarray  # B bool: the row ended with a stop token (else its budget ran out)


@dataclasses.dataclass
class ScoreOutput:
  logprobs: list[np.ndarray]  # log p of each continuation token given everything before it
  sums: np.ndarray  # B: log-likelihood of each continuation
  greedy: np.ndarray  # B bool: every continuation token is the model's argmax


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class _Sampling:
  temperature: jax.Array  # 0: greedy
  top_k: jax.Array  # 0: off
  top_p: jax.Array  # 1: off
  stop_tokens: jax.Array  # padded with -1


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class _State:
  cache: KVCache
  logits: jax.Array  # B V float32: of each row's next token
  positions: jax.Array  # B: position of each row's next token
  tokens: jax.Array  # B C new tokens (C: the new-token capacity); -1 where none was written
  logprobs: jax.Array  # B C
  sampling_logprobs: jax.Array  # B C
  budget: jax.Array  # B: tokens the row may generate
  done: jax.Array  # B bool
  count: jax.Array  # scalar: columns of `tokens` written so far
  key: jax.Array
  memory: Memory | None = None  # an encoder-decoder's encoder output, read by every step


def _bucket(n: int, minimum: int = 1) -> int:
  """n rounded up to a power of two, at least `minimum`."""
  return max(minimum, 1 << (int(n) - 1).bit_length())


def _filter_top_k_top_p(logits, top_k, top_p):
  """BV logits with the tokens outside the top k, then outside the nucleus of mass top_p
  (of the renormalized top k, as Hugging Face does), set to -inf."""
  ranked = -jnp.sort(-logits, axis=-1)
  k = jnp.where(top_k > 0, jnp.minimum(top_k, logits.shape[-1]), logits.shape[-1])
  kept = ranked >= jnp.take(ranked, k - 1, axis=-1)[:, None]
  probs = jax.nn.softmax(jnp.where(kept, ranked, -jnp.inf), axis=-1)
  kept &= jnp.cumsum(probs, axis=-1) - probs < top_p  # mass before a token is below top_p
  threshold = jnp.min(jnp.where(kept, ranked, jnp.inf), axis=-1, keepdims=True)
  return jnp.where(logits >= threshold, logits, -jnp.inf)


def _sample(logits, key, s: _Sampling):
  """BV float32 logits -> (tokens B, their log-probabilities under the sampled distribution)."""
  def draw():
    scaled = logits / s.temperature
    # Sorting the vocabulary costs V log V per row and token: only when asked for.
    scaled = jax.lax.cond((s.top_k > 0) | (s.top_p < 1.0), _filter_top_k_top_p,
                          lambda x, *_: x, scaled, s.top_k, s.top_p)
    tokens = jax.random.categorical(key, scaled)
    logprobs = jnp.take_along_axis(jax.nn.log_softmax(scaled), tokens[:, None], axis=-1)[:, 0]
    return tokens.astype(jnp.int32), logprobs

  def greedy():
    return jnp.argmax(logits, axis=-1).astype(jnp.int32), jnp.zeros(logits.shape[0])

  return jax.lax.cond(s.temperature > 0, draw, greedy)


def _emit(state: _State, sampling: _Sampling) -> _State:
  """Draws each unfinished row's next token from its logits into column `count`."""
  key = jax.random.fold_in(state.key, state.count)
  token, sampling_logprob = _sample(state.logits, key, sampling)
  logprob = jnp.take_along_axis(jax.nn.log_softmax(state.logits), token[:, None], axis=-1)
  live, column = ~state.done, state.count

  def write(buffer, value, empty):
    return buffer.at[:, column].set(jnp.where(live, value, empty))

  stops = jnp.isin(token, sampling.stop_tokens) | (column + 1 >= state.budget)
  return dataclasses.replace(
      state, tokens=write(state.tokens, token, -1),
      logprobs=write(state.logprobs, logprob[:, 0], 0.0),
      sampling_logprobs=write(state.sampling_logprobs, sampling_logprob, 0.0),
      done=state.done | (live & stops), count=column + 1)


@functools.partial(jax.jit, static_argnames=('graphdef', 'capacity'))
def _prefill(graphdef, params, tokens, positions, last, budget, key, capacity,
             memory=None) -> _State:
  """Writes the padded prompts (BT, positions -1 on padding) into a fresh cache with room
  for `capacity` new tokens; keeps the logits at column `last` of each row. `memory`: an
  encoder-decoder's `Transformer.memory`, kept in the state for every step."""
  model = nnx.merge(graphdef, params)
  b, t = tokens.shape
  x, cache = model.decode_hidden(tokens, positions, KVCache.init(model.cfg, b, t + capacity),
                                 memory)
  return _State(
      cache=cache, logits=model.logits(x[jnp.arange(b), last][:, None])[:, 0],
      positions=positions.max(axis=1) + 1, tokens=jnp.full((b, capacity), -1, jnp.int32),
      logprobs=jnp.zeros((b, capacity)), sampling_logprobs=jnp.zeros((b, capacity)),
      budget=budget, done=budget <= 0, count=jnp.zeros((), jnp.int32), key=key,
      memory=memory)


@functools.partial(jax.jit, static_argnames=('graphdef',), donate_argnames=('state',))
def _decode(graphdef, params, state: _State, sampling: _Sampling, steps) -> _State:
  """Up to `steps` more tokens per row, each drawn and then run through the model for the
  next logits (wasted after the last token: one call per `generate`, not per token);
  stops early when every row is done."""
  model = nnx.merge(graphdef, params)
  end = jnp.minimum(state.count + steps, state.tokens.shape[1])

  def step(s: _State) -> _State:
    s = _emit(s, sampling)
    token = jnp.maximum(s.tokens[:, s.count - 1], 0)  # finished rows hold -1: any valid id
    positions = jnp.where(s.tokens[:, s.count - 1] >= 0, s.positions, -1)  # -1: padding
    logits, cache = model.decode(token[:, None], positions[:, None], s.cache, s.memory)
    return dataclasses.replace(s, cache=cache, logits=logits[:, 0], positions=s.positions + 1)

  return jax.lax.while_loop(lambda s: (s.count < end) & ~s.done.all(), step, state)


def _as_rows(prompts: Prompts, what: str) -> list[np.ndarray]:
  if isinstance(prompts, np.ndarray) and prompts.ndim != 2:
    raise ValueError(f'{what} must be a 2-D array or a list of token lists, '
                     f'got an array of shape {prompts.shape}')
  if len(prompts) == 0:
    raise ValueError(f'no {what} given')
  if not all(isinstance(p, (Sequence, np.ndarray)) for p in prompts):
    raise ValueError(f'{what} must be a list of token lists, not a list of '
                     f'{type(prompts[0]).__name__}')
  return [np.asarray(p, np.int64).reshape(-1) for p in prompts]


def _check_ids(rows: list[np.ndarray], cfg: ModelConfig, what: str) -> None:
  for i, row in enumerate(rows):
    bad = row[(row < 0) | (row >= cfg.vocab_size)]
    if bad.size:
      raise ValueError(f'{what} {i} holds token id {bad[0]} outside the vocabulary '
                       f'[0, {cfg.vocab_size})')


def _sampling(cfg: ModelConfig, temperature, top_k, top_p, stop_tokens) -> _Sampling:
  if not temperature >= 0 or temperature == float('inf'):  # NaN fails every comparison
    raise ValueError(f'temperature must be >= 0 and finite (0: greedy), got {temperature}')
  if top_k < 0:
    raise ValueError(f'top_k must be >= 0 (0: off), got {top_k}')
  if not 0.0 < top_p <= 1.0:
    raise ValueError(f'top_p must be in (0, 1] (1: off), got {top_p}')
  stops = np.asarray(list(stop_tokens), np.int64).reshape(-1)
  bad = stops[(stops < 0) | (stops >= cfg.vocab_size)]
  if bad.size:
    raise ValueError(f'stop token {bad[0]} is outside the vocabulary [0, {cfg.vocab_size})')
  padded = np.full(_bucket(len(stops), 8), -1, np.int32)  # a few lengths, one compilation
  padded[:len(stops)] = stops
  return _Sampling(np.float32(temperature), np.int32(top_k), np.float32(top_p), padded)


def _outputs(state: _State, rows: int, sampling: _Sampling,
             return_logprobs: bool) -> GenerationOutput:
  tokens, logprobs, sampling_logprobs = jax.device_get(
      (state.tokens, state.logprobs, state.sampling_logprobs))
  lengths = (tokens[:rows] >= 0).sum(axis=1)
  cut = lambda a: [a[i, :n] for i, n in enumerate(lengths)]
  out_tokens = cut(tokens)
  stops = sampling.stop_tokens[sampling.stop_tokens >= 0]
  return GenerationOutput(
      tokens=out_tokens, logprobs=cut(logprobs) if return_logprobs else None,
      sampling_logprobs=cut(sampling_logprobs) if return_logprobs else None,
      finished=np.array([len(x) > 0 and x[-1] in stops for x in out_tokens]))


def _pad_prompts(rows: list[np.ndarray], batch: int, length: int, pad: str):
  """Prompts padded into a `batch` x `length` block (rows beyond the prompts are all
  padding), their positions (-1 on padding) and the column of each row's last token."""
  tokens = np.zeros((batch, length), np.int32)
  positions = np.full((batch, length), -1, np.int32)
  for i, row in enumerate(rows):
    start = length - len(row) if pad == 'left' else 0
    tokens[i, start:start + len(row)] = row
    positions[i, start:start + len(row)] = np.arange(len(row))
  last = np.where(positions >= 0, np.arange(length), -1).max(axis=1).clip(0)
  return tokens, positions, last.astype(np.int32)


def stream(model: Transformer, prompts: Prompts, *, max_new_tokens: int, temperature=1.0,
           top_k=0, top_p=1.0, stop_tokens: Sequence[int] = (), seed=0, pad='left',
           return_logprobs=True, chunk: int = 16) -> Iterator[GenerationOutput]:
  """`generate`, yielding the output so far after every `chunk` new tokens (one call of
  the compiled decode loop each). Checks its inputs at once."""
  cfg = model.cfg
  rows = _as_rows(prompts, 'prompts')
  _check_ids(rows, cfg, 'prompt')
  for i, row in enumerate(rows):
    if not 0 < len(row) < cfg.max_len:
      raise ValueError(f'prompt {i} has {len(row)} tokens; a prompt needs 1 to '
                       f'{cfg.max_len - 1} (max_len {cfg.max_len} minus one new token)')
  if max_new_tokens < 1:
    raise ValueError(f'max_new_tokens must be >= 1, got {max_new_tokens}')
  if chunk < 1:
    raise ValueError(f'chunk must be >= 1, got {chunk}')
  if pad not in ('left', 'right'):
    raise ValueError(f"pad must be 'left' or 'right', got {pad!r}")
  sampling = _sampling(cfg, temperature, top_k, top_p, stop_tokens)
  lengths = np.array([len(r) for r in rows])
  budget = np.minimum(max_new_tokens, cfg.max_len - lengths)
  if (budget < max_new_tokens).any():
    warnings.warn(f'{(budget < max_new_tokens).sum()} of {len(rows)} rows stop before '
                  f'max_new_tokens={max_new_tokens}: prompt plus new tokens must fit in max_len '
                  f'{cfg.max_len}', stacklevel=2)

  b, t = _bucket(len(rows)), min(_bucket(lengths.max(), 16), cfg.max_len)
  tokens, positions, last = _pad_prompts(rows, b, t, pad)
  budget = np.pad(budget, (0, b - len(rows))).astype(np.int32)  # bucketing rows: 0, done
  graphdef, params = nnx.split(model)

  def chunks():
    state = _prefill(graphdef, params, tokens, positions, last, budget, jax.random.key(seed),
                     capacity=_bucket(int(budget.max()), 16))
    while not jax.device_get(state.done).all():
      state = _decode(graphdef, params, state, sampling, np.int32(chunk))
      yield _outputs(state, len(rows), sampling, return_logprobs)

  return chunks()


def generate(model: Transformer, prompts: Prompts, *, max_new_tokens: int, temperature=1.0,
             top_k=0, top_p=1.0, stop_tokens: Sequence[int] = (), seed=0, pad='left',
             return_logprobs=True) -> GenerationOutput:
  """New tokens for each prompt (a list of token-id lists, or a 2-D array of equal rows).

  Args:
    max_new_tokens: per row, clipped with a warning to what fits in max_len.
    temperature: 0 is greedy (top_k and top_p then do nothing).
    top_k: sample among the k most likely tokens only; 0: all.
    top_p: then among the fewest most likely tokens holding probability top_p (nucleus).
    stop_tokens: a row ends after generating one of these (it is kept in the output).
    seed: the same seed and inputs give the same tokens.
    pad: 'left' or 'right' padding of the prompts; the same tokens either way.
    return_logprobs: fill the output's logprobs and sampling_logprobs.
  Returns:
    GenerationOutput: per row the new tokens, their log-probabilities, whether it stopped.
  Raises ValueError naming the first bad input before any computation.
  """
  *_, last = stream(model, prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                    top_k=top_k, top_p=top_p, stop_tokens=stop_tokens, seed=seed, pad=pad,
                    return_logprobs=return_logprobs, chunk=max_new_tokens)
  return last


@functools.partial(jax.jit, static_argnames='graphdef')
def _score(graphdef, params, inputs, targets):
  logits = nnx.merge(graphdef, params)(inputs)
  logprobs = jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], axis=-1)
  return logprobs[..., 0], jnp.argmax(logits, axis=-1) == targets


def scoring_row(i: int, context: np.ndarray, continuation: np.ndarray,
                max_len: int) -> np.ndarray:
  """Pair i's context + continuation, checked, in at most max_len + 1 tokens: a context too
  long loses its oldest tokens, as in lm-eval-harness."""
  if not len(context):
    raise ValueError(f'context {i} is empty; start it with the end-of-text token, as '
                     'training documents start')
  if not 0 < len(continuation) <= max_len:
    raise ValueError(f'continuation {i} has {len(continuation)} tokens; it needs 1 to '
                     f'max_len={max_len}')
  return np.concatenate([context, continuation])[-max_len - 1:]


def score(model: Transformer, contexts: Prompts, continuations: Prompts) -> ScoreOutput:
  """Log-likelihood of each continuation given its context, token by token (the
  `loglikelihood` of lm-eval-harness, the basis of multiple-choice evaluation).

  Args:
    contexts, continuations: token-id lists (or 2-D arrays), one pair per row. A context
      too long for max_len loses its oldest tokens, as in lm-eval-harness.
  Returns:
    ScoreOutput: per row the continuation's token log-probabilities, their sum, and whether
    greedy decoding would have produced it. Rows are right-padded and bucketed like
    `generate`'s, in one forward pass.
  """
  cfg = model.cfg
  contexts, continuations = _as_rows(contexts, 'contexts'), _as_rows(continuations,
                                                                    'continuations')
  if len(contexts) != len(continuations):
    raise ValueError(f'{len(contexts)} contexts but {len(continuations)} continuations')
  _check_ids(contexts, cfg, 'context')
  _check_ids(continuations, cfg, 'continuation')
  # The model reads every token but the last and predicts every token but the first.
  rows = [scoring_row(i, c, x, cfg.max_len)
          for i, (c, x) in enumerate(zip(contexts, continuations))]
  b, t = _bucket(len(rows)), min(_bucket(max(len(r) for r in rows) - 1, 16), cfg.max_len)
  inputs, targets = np.zeros((b, t), np.int32), np.zeros((b, t), np.int32)
  for i, row in enumerate(rows):
    inputs[i, :len(row) - 1], targets[i, :len(row) - 1] = row[:-1], row[1:]
  graphdef, params = nnx.split(model)
  logprobs, greedy = jax.device_get(_score(graphdef, params, inputs, targets))
  spans = [slice(len(r) - 1 - len(x), len(r) - 1) for r, x in zip(rows, continuations)]
  logprobs = [logprobs[i, span] for i, span in enumerate(spans)]
  return ScoreOutput(logprobs=logprobs, sums=np.array([lp.sum() for lp in logprobs]),
                     greedy=np.array([greedy[i, span].all() for i, span in enumerate(spans)]))


def sample_text(model: Transformer, tokenizer, prompt: str, num_new: int, temperature: float,
                seed: int = 0) -> str:
  """The prompt and its continuation, as text. The prompt starts a document (after
  end-of-text), as in training; the continuation stops at the context length."""
  ids = np.concatenate([[tokenizer.eot_id], tokenizer.encode(prompt)]).astype(np.int32)
  num_new = min(num_new, model.cfg.max_len - len(ids))
  out = generate(model, [ids], max_new_tokens=num_new, temperature=temperature, seed=seed)
  return tokenizer.decode(np.concatenate([ids[1:], out.tokens[0]]))
