"""Evaluating tasks on a model and its tokenizer, and the run folder's eval/STEP.json.

Every context starts with the tokenizer's end-of-text token, as training documents do, then
the few-shot prompt (`tasks.prompt`, or `tasks.prompt_tokens` for examples given as token
ids, which must not hold that token themselves). Multiple-choice and classify examples score
each candidate continuation with the packed scorer; generate decodes greedily through the
KV cache and cuts the text at the first stop string; retrieve ranks the documents by cosine
similarity of pooled hidden states.
"""

import dataclasses
import json
import os
import pathlib
from collections.abc import Sequence

import numpy as np

from llmjax import generate as decoding
from llmjax.eval import metrics, tasks
from llmjax.eval.scorer import Scorer
from llmjax.eval.tasks import Task, TaskError

GENERATE_BATCH = 16  # prompts per decoding call (generate buckets the batch itself)


def context_ids(task: Task, example: dict, index: int, tokenizer) -> list[int]:
  if 'context_tokens' in example:
    ids = tasks.prompt_tokens(task, example, index)
    return ids if ids[:1] == [tokenizer.eot_id] else [tokenizer.eot_id, *ids]
  return [tokenizer.eot_id, *tokenizer.encode(tasks.prompt(task, example, index)).tolist()]


def candidates(task: Task, example: dict, tokenizer) -> tuple[list[list[int]], list[int]]:
  """The continuations an example chooses among, as token ids, and their lengths for
  acc_norm (characters of the text, as lm-eval-harness counts; tokens for token ids).
  Multiple choice: its choices; classify: the task's labels, or the example's own
  `choices_tokens` (one per label) for data that is not text."""
  if 'choices_tokens' in example:
    ids = [list(map(int, c)) for c in example['choices_tokens']]
    return ids, [len(c) for c in ids]
  texts = example['choices'] if task.kind == 'multiple_choice' else task.labels
  ids = [tokenizer.encode(t).tolist() for t in texts]
  for text, tokens in zip(texts, ids):
    if not tokens:
      raise TaskError(f'task {task.name!r}, example {example["id"]!r}: the continuation '
                      f'{text!r} encodes to no tokens')
  return ids, [len(t) for t in texts]


def score_choices(task: Task, scorer: Scorer, tokenizer) -> tuple[list, list, list]:
  """Per evaluated example: the candidates' log-likelihoods, gold, and their lengths; every
  (context, candidate) pair of the task in one packed scoring."""
  pairs, owners, lengths, golds = [], [], [], []
  for index, example in enumerate(tasks.selected(task)):
    context = context_ids(task, example, index, tokenizer)
    ids, sizes = candidates(task, example, tokenizer)
    pairs += [(context, c) for c in ids]
    owners += [index] * len(ids)
    lengths.append(np.array(sizes))
    golds.append(int(example['gold']))
  sums = scorer.loglikelihood(pairs).sums
  owners = np.array(owners)
  return [sums[owners == i] for i in range(len(golds))], golds, lengths


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
  """The text before the first occurrence of any stop string."""
  ends = [text.find(s) for s in stop if s and s in text]
  return text[:min(ends)] if ends else text


def complete(model, tokenizer, prompts: Sequence[Sequence[int]], max_new_tokens: int,
             stop: Sequence[str] = (), temperature: float = 0.0, seed: int = 0) -> list[str]:
  """The text each token-id prompt continues with, cut at the first stop string; greedy at
  temperature 0. Decoding ends at end-of-text, and early at a stop string of one token.
  A prompt keeps its newest tokens to leave room for max_new_tokens."""
  stop_ids = [tokenizer.eot_id]
  stop_ids += [int(ids[0]) for ids in map(tokenizer.encode, stop) if len(ids) == 1]
  keep = max(1, model.cfg.max_len - max_new_tokens)
  prompts = [list(p)[-keep:] for p in prompts]
  texts = []
  for first in range(0, len(prompts), GENERATE_BATCH):
    out = decoding.generate(model, prompts[first:first + GENERATE_BATCH],
                            max_new_tokens=max_new_tokens, temperature=temperature,
                            stop_tokens=stop_ids, seed=seed + first, return_logprobs=False)
    texts += [cut_at_stop(tokenizer.decode(t[t != tokenizer.eot_id]), stop)
              for t in out.tokens]
  return texts


def generations(task: Task, model, tokenizer) -> list[str]:
  """Greedy continuations of the task's evaluated examples, cut at its stop strings."""
  prompts = [context_ids(task, e, i, tokenizer) for i, e in enumerate(tasks.selected(task))]
  return complete(model, tokenizer, prompts, task.max_new_tokens, task.stop)


def retrieval_similarity(task: Task, scorer: Scorer, tokenizer) -> np.ndarray:
  """Q N cosine similarities of pooled query and document hidden states."""
  encode = lambda text: [tokenizer.eot_id, *tokenizer.encode(text).tolist()]
  queries = [encode(e['context']) for e in tasks.selected(task)]
  documents = [encode(d) for d in task.documents]
  return metrics.cosine_similarity(scorer.embed(queries, task.pooling),
                                   scorer.embed(documents, task.pooling))


def chance(task: Task) -> dict:
  """Metric values of a uniform random guesser where they follow from the task's shape,
  overridden by the task's own `chance`."""
  examples = tasks.selected(task)
  known = {}
  if task.kind == 'multiple_choice':
    p = float(np.mean([1 / len(e.get('choices_tokens', e.get('choices'))) for e in examples]))
    known = {'acc': p, 'acc_norm': p, 'gold_prob': p}
  elif task.kind == 'classify':
    known = {'acc': 1 / len(task.labels), 'gold_prob': 1 / len(task.labels)}
  elif task.kind == 'retrieve':
    n = len(task.documents)
    known = {f'recall@{k}': min(k, n) / n for k in metrics.RETRIEVAL_KS}
    known['mrr'] = float(np.sum(1 / np.arange(1, n + 1)) / n)
  return {**known, **(task.chance or {})}


def target_nll(task: Task, scorer: Scorer, tokenizer) -> list[float] | None:
  """Per evaluated generate example: the target's negative log-likelihood after its context,
  per character (the task loss the two-step law reads); None when a target encodes to no
  tokens, since nothing is then scored."""
  selected = tasks.selected(task)
  targets = [tokenizer.encode(e['target']).tolist() for e in selected]
  if not all(targets):
    return None
  contexts = [context_ids(task, e, i, tokenizer) for i, e in enumerate(selected)]
  sums = scorer.loglikelihood(list(zip(contexts, targets))).sums
  return [-ll / max(len(e['target']), 1) for ll, e in zip(sums, selected)]


def _scores(task: Task, model, tokenizer, scorer: Scorer) -> dict:
  """What the task's metrics are computed from, one entry per evaluated example."""
  if task.kind in ('multiple_choice', 'classify'):
    lls, golds, lengths = score_choices(task, scorer, tokenizer)
    return {'lls': lls, 'golds': golds, 'lengths': lengths}
  if task.kind == 'generate':
    return {'predictions': generations(task, model, tokenizer),
            'targets': [e['target'] for e in tasks.selected(task)],
            'nll': target_nll(task, scorer, tokenizer)}
  return {'similarity': retrieval_similarity(task, scorer, tokenizer),
          'golds': [e['gold'] for e in tasks.selected(task)]}


def _metrics(task: Task, scores: dict, keep: list[int], seed: int) -> dict:
  """The task's metrics on the examples `keep` indexes."""
  pick = lambda values: None if values is None else [values[i] for i in keep]
  if task.kind == 'multiple_choice':
    return metrics.multiple_choice(pick(scores['lls']), pick(scores['golds']),
                                   pick(scores['lengths']), seed=seed)
  if task.kind == 'classify':
    return metrics.classify(pick(scores['lls']), pick(scores['golds']),
                            pick(scores['lengths']), seed=seed)
  if task.kind == 'generate':
    return metrics.generate(pick(scores['predictions']), pick(scores['targets']), seed=seed,
                            target_nll=pick(scores['nll']))
  return metrics.retrieve(scores['similarity'][keep], pick(scores['golds']), seed=seed)


def domains_of(task: Task) -> dict[str, list[int]]:
  """{domain: indices of the evaluated examples from it}, in order of first appearance."""
  found = {}
  for index, example in enumerate(tasks.selected(task)):
    found.setdefault(str(example.get('domain', '')), []).append(index)
  return found


def _summary(task: Task, out: dict, keep: list[int]) -> dict:
  subset = dataclasses.replace(task, examples=tuple(tasks.selected(task)[i] for i in keep),
                               max_examples=-1)
  out['num_examples'] = len(keep)
  out['chance'] = chance(subset)
  if task.ceiling:
    out['ceiling'] = dict(task.ceiling)
  return out


def evaluate_task(task: Task, model, tokenizer, *, scorer: Scorer | None = None,
                  seed: int = 0) -> dict:
  """{metric: value, metric_stderr: its bootstrap standard error, num_examples, chance,
  ceiling (when the task knows it)} of one task; with examples from more than one domain,
  also 'domains': {domain: the same, on that domain's examples}."""
  tasks.validate(task)
  scorer = scorer or Scorer(model)
  scores = _scores(task, model, tokenizer, scorer)
  everything = list(range(len(tasks.selected(task))))
  out = _summary(task, _metrics(task, scores, everything, seed), everything)
  by_domain = domains_of(task)
  if len(by_domain) > 1:
    out['domains'] = {domain: _summary(task, _metrics(task, scores, keep, seed), keep)
                      for domain, keep in by_domain.items()}
  return out


def evaluate(task_list: Sequence[Task], model, tokenizer, seed: int = 0, rows: int = 8) -> dict:
  """{task name: evaluate_task's results}; every task is validated before any is scored.
  `rows`: rows of the packed scorer per forward pass (more for an accelerator)."""
  for task in task_list:
    tasks.validate(task)
  scorer = Scorer(model, rows=rows)
  return {t.name: evaluate_task(t, model, tokenizer, scorer=scorer, seed=seed)
          for t in task_list}


def results_file(run_path, step: int) -> pathlib.Path:
  return pathlib.Path(run_path) / 'eval' / f'{step}.json'


def write_results(run_path, step: int, results: dict) -> pathlib.Path:
  """Merges `results` ({task: metrics}) into RUN/eval/STEP.json ({'step', 'tasks'}): tasks
  evaluated before at this step and not now are kept. Written atomically."""
  path = results_file(run_path, step)
  path.parent.mkdir(parents=True, exist_ok=True)
  merged = read_results(run_path).get(step, {})
  merged.update(results)
  tmp = path.with_suffix('.json.tmp')
  tmp.write_text(json.dumps({'step': step, 'tasks': merged}, indent=1, sort_keys=True) + '\n')
  os.replace(tmp, path)
  return path


def read_results(run_path) -> dict[int, dict]:
  """{step: {task: metrics}} of every RUN/eval/STEP.json, by step."""
  folder = pathlib.Path(run_path) / 'eval'
  found = {}
  for path in sorted(folder.glob('[0-9]*.json')) if folder.is_dir() else ():
    if path.stem.isdigit():
      found[int(path.stem)] = json.loads(path.read_text())['tasks']
  return dict(sorted(found.items()))
