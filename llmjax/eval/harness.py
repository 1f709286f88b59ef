"""lm-evaluation-harness on llmjax checkpoints: an `lm_eval.api.model.LM` on the packed
scorer and the KV-cache decoder (`pip install llmjax[harness]`).

  import lm_eval
  from llmjax.eval import harness
  lm = harness.LlmjaxLM.from_run('runs/base')
  lm_eval.simple_evaluate(model=lm, tasks=['hellaswag'])

Texts are encoded as llmjax's own evaluation encodes them: every context starts with the
end-of-text token (training documents do), and context and continuation are encoded
separately, so a harness task scores exactly what `runner` scores on the same examples.
"""

import collections

from lm_eval.api.model import LM

from llmjax import runs
from llmjax.eval import runner
from llmjax.eval.scorer import Scorer

DEFAULT_MAX_GEN_TOKS = 256  # as the harness's own models default


class LlmjaxLM(LM):
  """A model and its tokenizer as a harness LM. Requests are scored in one packed call per
  method call, generations in batches of runner.GENERATE_BATCH."""

  def __init__(self, model, tokenizer, rows: int = 8):
    super().__init__()
    self.model, self.tokenizer = model, tokenizer
    self.scorer = Scorer(model, rows=rows)

  @classmethod
  def from_run(cls, workdir, step: int | None = None, rows: int = 8) -> 'LlmjaxLM':
    run = runs.RunFolder(workdir)
    return cls(run.model(step), run.tokenizer, rows=rows)

  def _ids(self, text: str) -> list[int]:
    return self.tokenizer.encode(text).tolist() if text else []

  def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
    pairs = [([self.tokenizer.eot_id, *self._ids(context)], self._ids(continuation))
             for context, continuation in (r.args for r in requests)]
    scores = self.scorer.loglikelihood(pairs)
    return [(float(s), bool(g)) for s, g in zip(scores.sums, scores.greedy)]

  def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
    """Each string's log-likelihood after end-of-text: its tokens in windows of max_len,
    each window conditioned on as many earlier tokens as fit (the scorer keeps the
    newest), so every token is predicted exactly once."""
    width = self.model.cfg.max_len
    pairs, owners = [], []
    for i, (text,) in enumerate(r.args for r in requests):
      tokens = [self.tokenizer.eot_id, *self._ids(text)]
      for start in range(1, len(tokens), width):
        pairs.append((tokens[:start], tokens[start:start + width]))
        owners.append(i)
    totals = [0.0] * len(requests)
    if pairs:
      for owner, value in zip(owners, self.scorer.loglikelihood(pairs).sums):
        totals[owner] += float(value)
    return totals

  def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
    """Greedy (or, with do_sample, sampled at `temperature`) continuations until a string
    of `until`, at most `max_gen_toks` tokens; requests with the same settings decode
    together."""
    groups = collections.defaultdict(list)
    for i, (context, kwargs) in enumerate(r.args for r in requests):
      until = kwargs.get('until', ())
      until = (until,) if isinstance(until, str) else tuple(until)
      temperature = float(kwargs.get('temperature', 0.0)) if kwargs.get('do_sample') else 0.0
      key = (until, int(kwargs.get('max_gen_toks', DEFAULT_MAX_GEN_TOKS)), temperature)
      groups[key].append((i, [self.tokenizer.eot_id, *self._ids(context)]))
    out = [''] * len(requests)
    for (until, max_new, temperature), items in groups.items():
      texts = runner.complete(self.model, self.tokenizer, [p for _, p in items], max_new,
                              until, temperature=temperature)
      for (i, _), text in zip(items, texts):
        out[i] = text
    return out
