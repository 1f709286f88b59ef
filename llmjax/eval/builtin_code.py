"""Built-in code tasks from the standard library's held-out files (no download).

"Held-out" is exactly the split a run trains beside: `pystdlib.held_out_files(eval_fraction,
split_seed)`, the files `data.source=pystdlib` leaves out of training with the same
data.eval_fraction and data.split_seed. Those files are divided once more, by a seeded
draw of whole files, into a few-shot pool (POOL_SHARE of them) and the evaluated examples,
so a demonstration never comes from the file of an evaluated example. Functions are found
with `ast`; every example records its file (`source`) and that file's domain
(`pystdlib.domain`: code | tests | text). Everything is a pure function of the seeds.

  code_next_line   multiple choice: a function's first lines -> its true next line among
                   lines of other files, re-indented like the true one
  code_summarize   generate: a function without its docstring -> the docstring's first line
  code_retrieve    retrieve: a docstring's first line -> its function among N
  code_classify    classify: a function -> ' library' or ' test' (the file's domain),
                   balanced, so chance is 1/2
"""

import ast
import dataclasses
import functools
import io
import textwrap
import tokenize

import numpy as np

from llmjax.data import pystdlib
from llmjax.eval.tasks import Task

POOL_SHARE = 0.25  # of the held-out files: the few-shot pool's
MAX_FUNCTION_CHARS = 1500  # longer functions are left out (prompts stay small on a CPU)
NUM_CHOICES = 4
MIN_LINE_CHARS = 8  # a next line (or distractor) shorter than this, stripped, is too easy
CLASSIFY_LABELS = (' library', ' test')  # label words, after CLASSIFY_PROMPT


@dataclasses.dataclass(frozen=True)
class Function:
  source: str  # the file, relative to the standard library's root
  domain: str  # pystdlib.domain of the file
  line: int  # of the `def` (decorators included)
  name: str
  text: str  # dedented source
  docstring: str  # its first line ('' if none)
  without_docstring: str  # the source with the docstring statement removed ('' if only one)


def _read(path) -> str | None:
  data = path.read_bytes()
  try:
    encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    return data.decode(encoding)
  except (SyntaxError, UnicodeDecodeError, LookupError):
    return None


def _function(node, lines: list[str], source: str) -> Function | None:
  first = min([node.lineno] + [d.lineno for d in node.decorator_list])
  own = lines[first - 1:node.end_lineno]
  text = textwrap.dedent('\n'.join(own))
  if len(text) > MAX_FUNCTION_CHARS or len(own) < 2:
    return None
  docstring, without = '', ''
  doc = ast.get_docstring(node, clean=True)
  body = node.body[0]
  if doc and doc.strip():
    docstring = doc.strip().splitlines()[0].strip()
    rest = lines[first - 1:body.lineno - 1] + lines[body.end_lineno:node.end_lineno]
    if len(node.body) > 1:
      without = textwrap.dedent('\n'.join(rest))
  return Function(source, pystdlib.domain(source), first, node.name, text, docstring, without)


def functions_of(path, root) -> list[Function]:
  """Every function and method of one file, in line order (none if it does not parse)."""
  text = _read(path)
  try:
    tree = ast.parse(text) if text is not None else None
  except (SyntaxError, ValueError):
    tree = None
  if tree is None:
    return []
  source, lines = path.relative_to(root).as_posix(), text.splitlines()
  nodes = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
  found = [_function(n, lines, source) for n in sorted(nodes, key=lambda n: n.lineno)]
  return [f for f in found if f is not None]


@functools.lru_cache(maxsize=8)
def held_out_functions(eval_fraction: float, split_seed: int,
                       seed: int) -> tuple[tuple[Function, ...], tuple[Function, ...]]:
  """(example functions, few-shot pool functions) of the held-out files, split by file."""
  root = pystdlib.stdlib_root()
  files = pystdlib.held_out_files(eval_fraction, split_seed)
  order = np.random.default_rng([seed, 0x9001]).permutation(len(files))
  pool_count = int(POOL_SHARE * len(files))
  pool = {files[i] for i in order[:pool_count]}
  examples = [f for p in files if p not in pool for f in functions_of(p, root)]
  shots = [f for p in files if p in pool for f in functions_of(p, root)]
  return tuple(examples), tuple(shots)


@functools.lru_cache(maxsize=8)
def training_functions(eval_fraction: float, split_seed: int, seed: int,
                       max_files: int) -> tuple[Function, ...]:
  """Functions of a seeded sample of `max_files` files the run TRAINS on (never a held-out
  file): fine-tuning material whose examples cannot overlap the evaluated ones."""
  held_out = set(pystdlib.held_out_files(eval_fraction, split_seed))
  files = [p for p in pystdlib.source_files() if p not in held_out]
  order = np.random.default_rng([seed, 0xf17e]).permutation(len(files))[:max_files]
  root = pystdlib.stdlib_root()
  return tuple(f for i in sorted(order) for f in functions_of(files[i], root))


def training_examples(name: str, seed: int = 0, eval_fraction: float = 0.01,
                      split_seed: int = 0, max_files: int = 200) -> tuple[dict, ...]:
  """Examples shaped like built-in task `name`'s (context and gold, target or choices),
  made from training files only, in a seeded order; ids carry the prefix 'train:'."""
  functions = training_functions(eval_fraction, split_seed, seed, max_files)
  make = {'code_next_line': lambda: _next_line_examples(functions, seed, 'train:'),
          'code_summarize': lambda: _summarize_examples(functions, 'train:'),
          'code_classify': lambda: _classify_examples(functions, seed, 'train:')}
  if name not in make:
    raise ValueError(f'no training examples for {name!r}; known: {", ".join(make)}')
  return _take(make[name](), -1, seed, 5)


def _base(f: Function, prefix: str) -> dict:
  return {'id': f'{prefix}{f.source}:{f.line}:{f.name}', 'domain': f.domain, 'source': f.source}


def _next_line_example(f: Function, others: list[str], rng, prefix: str) -> dict | None:
  lines = f.text.splitlines()
  cuts = [j for j in range(1, len(lines)) if len(lines[j].strip()) >= MIN_LINE_CHARS]
  if not cuts:
    return None
  cut = int(rng.choice(cuts))
  true = lines[cut]
  indent = true[:len(true) - len(true.lstrip())]
  picked = []
  for k in rng.permutation(len(others)):
    line = indent + others[k]
    if line != true and line not in picked:
      picked.append(line)
    if len(picked) == NUM_CHOICES - 1:
      break
  gold = int(rng.integers(NUM_CHOICES))
  choices = picked[:gold] + [true] + picked[gold:]
  return {**_base(f, prefix), 'context': '\n'.join(lines[:cut]) + '\n', 'choices': choices,
          'gold': gold}


def _next_line_examples(functions, seed: int, prefix: str) -> list[dict]:
  # Distractors: stripped lines of the same set's other files (never the example's own).
  by_file: dict[str, list[str]] = {}
  for f in functions:
    by_file.setdefault(f.source, []).extend(
        s.strip() for s in f.text.splitlines()[1:] if len(s.strip()) >= MIN_LINE_CHARS)
  rng = np.random.default_rng([seed, 0x11e])
  examples = []
  for f in functions:
    others = [line for source, lines in by_file.items() if source != f.source for line in lines]
    example = _next_line_example(f, others, rng, prefix) if len(others) >= NUM_CHOICES else None
    if example is not None:
      examples.append(example)
  return examples


def _take(examples: list[dict], max_examples: int, seed: int, salt: int) -> tuple[dict, ...]:
  """A seeded sample of at most max_examples (-1: all), in a seeded order."""
  order = np.random.default_rng([seed, salt]).permutation(len(examples))
  if max_examples >= 0:
    order = order[:max_examples]
  return tuple(examples[i] for i in order)


def code_next_line(seed: int = 0, max_examples: int = 200, eval_fraction: float = 0.01,
                   split_seed: int = 0) -> Task:
  functions, pool = held_out_functions(eval_fraction, split_seed, seed)
  return Task(
      name='code_next_line', kind='multiple_choice',
      examples=_take(_next_line_examples(functions, seed, ''), max_examples, seed, 1),
      fewshot_pool=tuple(_next_line_examples(pool, seed, 'pool:')),
      chance={'acc': 1 / NUM_CHOICES, 'acc_norm': 1 / NUM_CHOICES},
      description='the true next line of a held-out function among lines of other files')


def _summary_context(f: Function) -> str:
  # Setting __doc__ after the function is valid Python, so the prompt reads like code.
  return f'{f.without_docstring}\n\n{f.name}.__doc__ = """'


def _summarize_examples(functions, prefix: str) -> list[dict]:
  return [{**_base(f, prefix), 'context': _summary_context(f), 'target': f.docstring}
          for f in functions if f.docstring and f.without_docstring]


def code_summarize(seed: int = 0, max_examples: int = 50, eval_fraction: float = 0.01,
                   split_seed: int = 0) -> Task:
  functions, pool = held_out_functions(eval_fraction, split_seed, seed)
  return Task(
      name='code_summarize', kind='generate',
      examples=_take(_summarize_examples(functions, ''), max_examples, seed, 2),
      fewshot_pool=tuple(_summarize_examples(pool, 'pool:')),
      stop=('"""', '\n'), max_new_tokens=96,
      description="a held-out function without its docstring -> the docstring's first line")


def code_retrieve(seed: int = 0, max_examples: int = 64, eval_fraction: float = 0.01,
                  split_seed: int = 0) -> Task:
  functions, _ = held_out_functions(eval_fraction, split_seed, seed)
  chosen = _take([{'function': f} for f in functions if f.docstring and f.without_docstring],
                 max_examples, seed, 3)
  examples = tuple({**_base(c['function'], ''), 'context': c['function'].docstring, 'gold': i}
                   for i, c in enumerate(chosen))
  n = len(examples)
  chance = {f'recall@{k}': min(k, n) / n for k in (1, 5, 10)} if n else None
  if chance:
    chance['mrr'] = float(np.sum(1.0 / np.arange(1, n + 1)) / n)
  return Task(
      name='code_retrieve', kind='retrieve', examples=examples,
      documents=tuple(c['function'].without_docstring for c in chosen), chance=chance,
      description="a docstring's first line -> its function (docstring removed) among N")


CLASSIFY_PROMPT = '\n\n# The code above is from a'


def _classify_examples(functions, seed: int, prefix: str) -> list[dict]:
  """As many library as test functions (a seeded sample of the larger class)."""
  classes = [[f for f in functions if f.domain == d] for d in ('code', 'tests')]
  count = min(len(c) for c in classes)
  rng = np.random.default_rng([seed, 0xc1a5])
  examples = []
  for gold, members in enumerate(classes):
    for i in sorted(rng.permutation(len(members))[:count]):
      f = members[i]
      examples.append({**_base(f, prefix), 'context': f.text + CLASSIFY_PROMPT, 'gold': gold})
  return examples


def code_classify(seed: int = 0, max_examples: int = 100, eval_fraction: float = 0.01,
                  split_seed: int = 0) -> Task:
  functions, pool = held_out_functions(eval_fraction, split_seed, seed)
  return Task(
      name='code_classify', kind='classify',
      examples=_take(_classify_examples(functions, seed, ''), max_examples, seed, 4),
      fewshot_pool=tuple(_classify_examples(pool, seed, 'pool:')), labels=CLASSIFY_LABELS,
      chance={'acc': 0.5, 'f1_macro': 0.5},
      description='a held-out function: from a library module or a test file (balanced)')
