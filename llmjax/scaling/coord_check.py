"""Coordinate check: do activations and their updates keep their size as the model grows?

A few steps of AdamW (constant LR, no warmup, no clipping, no decay) on one batch of random
tokens, at several widths (or depths), recording at each step the mean |x| of each site's
output and the mean |x_t - x_0| of its change since init, on that batch. Sites: the embeddings,
each block's attention and MLP branch (after its multiplier), the final residual stream
and the logits. Under a parametrization that transfers (muP across width, CompleteP
across depth) the log-log slope of each against width stays near 0; under sp the logits'
change grows about linearly with width, because Adam moves every weight by ~lr whatever
its fan-in.

  python -m llmjax.scaling coord-check --config experiments/base.py --parametrization mup \\
      --widths 64,128,256,512
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
from flax import nnx

from llmjax import optim
from llmjax.model import config as model_config
from llmjax.model import parametrization as pz
from llmjax.model.attention import attention_mask
from llmjax.model.config import ModelConfig
from llmjax.model.transformer import Transformer, parametrization_rules


@dataclasses.dataclass(frozen=True)
class CheckConfig:
  steps: int = 3  # optimizer steps after init
  seeds: tuple[int, ...] = (0, 1)
  lr: float = 1e-2  # constant, no warmup
  batch: int = 4  # B
  seq_len: int = 32  # T


def ladder_model(base: ModelConfig, width: int, depth: int) -> ModelConfig:
  """`base` (vocabulary, context, architecture, parametrization) at a ladder shape."""
  return dataclasses.replace(base, **model_config.ladder_shape(width, depth))


def _sites(model: Transformer, tokens: jax.Array) -> dict[str, jax.Array]:
  """Site name -> its output on `tokens` BT; the blocks run in one scan (flat compile time
  in depth), each returning its two branches: attn and mlp are L B T D."""
  positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
  mask = attention_mask(jnp.ones_like(tokens))
  x0 = model.embed_tokens(tokens, positions)
  graphdef, stacked = nnx.split(model.blocks)

  def body(x, block_state):
    block = nnx.merge(graphdef, block_state)
    mid = block.attend(x, positions, mask)
    out = block.feed_forward(mid)
    return out, (mid - x, out - mid)

  x, (attn, mlp) = jax.lax.scan(body, x0, stacked)
  return {'embed': x0, 'attn': attn, 'mlp': mlp, 'final': x, 'logits': model.logits(x)}


def _stats(sites: dict[str, np.ndarray], step: int) -> dict[str, np.ndarray]:
  """(mean |x|, mean |x - x_0|) at `step` per site (sites: step-stacked outputs); block
  sites per layer."""
  out = {}
  for name, x in sites.items():
    axes = tuple(range(1, x.ndim - 1)) if name in ('attn', 'mlp') else None
    act = np.mean(np.abs(x[step]), axis=axes)
    delta = np.mean(np.abs(x[step] - x[0]), axis=axes)
    out[name] = np.stack([act, delta], axis=-1)
  return out


@functools.partial(jax.jit, static_argnames=('graphdef', 'tx', 'steps'))
def _run(graphdef, params, opt_state, batch, *, tx, steps: int):
  """`steps` optimizer steps on one batch B T+1; the sites at init and after each step,
  stacked (steps+1 ...). The sites are the loss's own forward pass (one more forward at
  the end gives the last), so the graph holds one forward and backward."""

  def loss(params):
    sites = _sites(nnx.merge(graphdef, params), batch[:, :-1])
    ce = optax.softmax_cross_entropy_with_integer_labels(sites['logits'], batch[:, 1:])
    return ce.mean(), sites

  def step(carry, _):
    params, opt_state = carry
    (_, sites), grads = jax.value_and_grad(loss, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), sites

  return jax.lax.scan(step, (params, opt_state), None, length=steps + 1)[1]


def measure(cfg: ModelConfig, check: CheckConfig = CheckConfig()) -> pd.DataFrame:
  """Rows (seed, step, site, act, delta) of one model; step 0 is init."""
  ocfg = optim.OptimConfig(lr=check.lr, schedule='constant', warmup_steps=0,
                           weight_decay=0.0, clip_norm=0.0)
  tx, _ = optim.make(ocfg, cfg, check.steps)
  rows = []
  for seed in check.seeds:
    graphdef, params = nnx.split(Transformer(cfg, nnx.Rngs(params=seed)), nnx.Param)
    batch = jax.random.randint(jax.random.key(1000 + seed), (check.batch, check.seq_len + 1),
                               0, cfg.vocab_size)
    sites = jax.device_get(_run(graphdef, params, tx.init(params), batch, tx=tx,
                                steps=check.steps))
    sites = {k: np.asarray(v, np.float32) for k, v in sites.items()}
    for step in range(check.steps + 1):
      for name, values in _stats(sites, step).items():
        for site, (act, delta) in _named(name, values):
          rows.append(dict(seed=seed, step=step, site=site, act=float(act), delta=float(delta)))
  return pd.DataFrame(rows)


def _named(name: str, values: np.ndarray):
  if values.ndim == 1:
    return [(name, values)]
  return [(f'{name}.{i}', v) for i, v in enumerate(values)]


def coord_check(base: ModelConfig, sizes, axis: str = 'width', *, width: int = 64,
                depth: int = 2, check: CheckConfig = CheckConfig()) -> pd.DataFrame:
  """Rows (size, seed, step, site, act, delta) over model widths (at `depth`) or depths
  (at `width`), each a ladder shape of `base` (which carries the parametrization and its
  base shape)."""
  if axis not in ('width', 'depth'):
    raise ValueError(f'axis {axis!r}: width or depth')
  frames = []
  for size in sizes:
    cfg = ladder_model(base, size, depth) if axis == 'width' else ladder_model(base, width, size)
    frames.append(measure(cfg, check).assign(size=size))
  return pd.concat(frames, ignore_index=True)


def slopes(table: pd.DataFrame, column: str = 'delta') -> pd.DataFrame:
  """Log-log slope against size of the seed-mean `column`, per step and site (sites that
  exist at every size); a step-by-site table."""
  sizes = table['size'].nunique()
  mean = table.groupby(['step', 'site', 'size'])[column].mean().reset_index()
  out = {}
  for (step, site), group in mean.groupby(['step', 'site']):
    if len(group) == sizes and (group[column] > 0).all():
      fit = np.polyfit(np.log(group['size']), np.log(group[column]), 1)
      out[(step, site)] = fit[0]
  series = pd.Series(out, name='slope')
  series.index.names = ['step', 'site']
  return series.unstack('site')


def plot(table: pd.DataFrame, column: str = 'delta', title: str = ''):
  """One panel per step: seed-mean `column` against size, one line per site (log-log)."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  steps = sorted(table['step'].unique())
  fig, axes = plt.subplots(1, len(steps), figsize=(3.2 * len(steps), 3.2), sharey=True)
  mean = table.groupby(['step', 'site', 'size'])[column].mean().reset_index()
  for ax, step in zip(np.atleast_1d(axes), steps):
    for site, group in mean[mean['step'] == step].groupby('site'):
      ax.plot(group['size'], group[column], marker='o', ms=3, label=site)
    ax.set(xscale='log', yscale='log', title=f'step {step}', xlabel='size')
  np.atleast_1d(axes)[0].set_ylabel(f'mean |{"x - x0" if column == "delta" else "x"}|')
  np.atleast_1d(axes)[-1].legend(fontsize=6)
  fig.suptitle(title)
  fig.tight_layout()
  return fig


def verdict(table: pd.DataFrame, tolerance: float = 0.15,
            column: str = 'delta') -> tuple[float, bool]:
  """(largest |slope| of `column` over steps >= 1 and every site, whether it is within
  `tolerance`). Sites that do not move at a step (zero readout init, step 1) are skipped."""
  s = slopes(table, column)
  worst = float(np.nanmax(np.abs(s[s.index >= 1].to_numpy())))
  return worst, worst <= tolerance


def parametrization_table(model_cfg: ModelConfig, optim_cfg: optim.OptimConfig) -> pd.DataFrame:
  """Per parameter: group, fan-in against the base's, init std, LR, weight-decay, Adam-eps
  and forward multipliers (weight decay: of lr_t * wd * p, 0 where the group is skipped)."""
  rules = parametrization_rules(model_cfg)
  decay = optim.decay_multipliers(optim_cfg, model_cfg, rules)
  return pd.DataFrame([dict(param=r.path, group=r.group, fan_in=f'{r.fan_in}/{r.base_fan_in}',
                            init_std=r.init_std, lr=r.lr, wd=decay[r.path], eps=r.eps,
                            forward=r.forward or '-') for r in rules.values()])


def main(argv: list[str]) -> int:
  """python -m llmjax.scaling coord-check | describe-parametrization ARGS."""
  import argparse
  parser = argparse.ArgumentParser(prog='python -m llmjax.scaling')
  add_commands(parser.add_subparsers(dest='command', required=True))
  return cli(parser.parse_args(argv))


def add_commands(commands) -> None:
  """The coord-check and describe-parametrization subcommands."""
  for name, help_text in (('coord-check', 'coordinate check over widths or depths: slopes, '
                           'verdict, plot'),
                          ('describe-parametrization', 'per-parameter table of what the '
                           'parametrization does')):
    c = commands.add_parser(name, help=help_text)
    c.add_argument('--config', required=True, help='experiment file[:variant] (its model)')
    c.add_argument('--parametrization', choices=pz.PARAMETRIZATIONS, default='mup')
    c.add_argument('--base-width', type=int, default=0,
                   help='muP base width (default: the smallest width, or the model\'s)')
    c.add_argument('--base-depth', type=int, default=0, help='CompleteP base depth')
    c.add_argument('--readout-zero-init', action='store_true',
                   help='mup_readout_zero_init (an untied head starts at 0)')
    c.add_argument('--untied', action='store_true', help='untie the output head')
    if name == 'coord-check':
      c.add_argument('--widths', default='', help='comma-separated widths (ladder shapes)')
      c.add_argument('--depths', default='', help='comma-separated depths, at --width')
      c.add_argument('--width', type=int, default=64, help='width of a depth check')
      c.add_argument('--depth', type=int, default=0, help='depth of a width check '
                     '(default: the model\'s)')
      c.add_argument('--steps', type=int, default=3)
      c.add_argument('--seeds', type=int, default=2)
      c.add_argument('--lr', type=float, default=1e-2)
      c.add_argument('--tolerance', type=float, default=0.15)
      c.add_argument('--out', default='coord_check.png', help='plot file')
      c.add_argument('--table', action='store_true', help='also print the parametrization '
                     'table of the largest model')


def _model_from(args) -> tuple[ModelConfig, optim.OptimConfig]:
  import runpy
  from llmjax import configs
  path, _, variant = args.config.partition(':')
  config = runpy.run_path(path)['get_config'](variant)
  model = configs.build_model_config(config)
  o = config.optim
  ocfg = optim.OptimConfig(weight_decay_mode=o.weight_decay_mode,
                           no_decay_groups=tuple(o.no_decay_groups))
  fields = dict(parametrization=args.parametrization)
  if args.parametrization != 'sp':
    fields.update(mup_base_width=args.base_width, mup_readout_zero_init=args.readout_zero_init)
  if args.parametrization == 'completep':
    fields.update(mup_base_depth=args.base_depth)
  if args.untied:
    fields.update(tie_embeddings=False)
  return dataclasses.replace(model, **fields), ocfg


def _sizes(text: str) -> list[int]:
  sizes = [int(s) for s in text.split(',') if s.strip()]
  if len(sizes) < 2 or min(sizes) < 1:
    raise ValueError(f'{text!r}: give at least two positive sizes, e.g. 64,128,256')
  return sorted(sizes)


def cli(args) -> int:
  """Runs one of the subcommands above; 2 on bad input, 1 when a check fails."""
  import sys
  try:
    model, ocfg = _model_from(args)
    axis = 'depth' if args.command == 'coord-check' and args.depths else 'width'
    if args.command == 'coord-check':
      if bool(args.widths) == bool(args.depths):
        raise ValueError('give --widths or --depths')
      sizes = _sizes(args.depths or args.widths)
      depth = args.depth or model.num_layers
      if model.parametrization != 'sp' and not model.mup_base_width:
        model = dataclasses.replace(model, mup_base_width=min(sizes) if axis == 'width'
                                    else args.width)
      if model.parametrization == 'completep' and not model.mup_base_depth:
        model = dataclasses.replace(model, mup_base_depth=min(sizes) if axis == 'depth' else depth)
      largest = (ladder_model(model, sizes[-1], depth) if axis == 'width'
                 else ladder_model(model, args.width, sizes[-1]))
    else:
      largest = model
    problems = pz.problems(largest)
    if problems:
      raise ValueError('; '.join(problems))
  except (ValueError, OSError, KeyError) as e:
    print(f'llmjax.scaling {args.command}: {e}', file=sys.stderr)
    return 2
  if args.command == 'describe-parametrization' or args.table:
    print(parametrization_table(largest, ocfg).to_string(index=False))
    if args.command == 'describe-parametrization':
      return 0
  check = CheckConfig(steps=args.steps, seeds=tuple(range(args.seeds)), lr=args.lr)
  table = coord_check(model, sizes, axis, width=args.width, depth=depth, check=check)
  for column in ('delta', 'act'):
    print(f'log-log slope against {axis} of mean |{"x - x0" if column == "delta" else "x"}|:')
    print(slopes(table, column).round(3).to_string())
  worst, ok = verdict(table, args.tolerance)
  plot(table, title=f'{model.parametrization}: mean |x - x0| against {axis}').savefig(args.out)
  print(f'largest |slope| of the change, steps 1-{args.steps}: {worst:.3f} '
        f'({"within" if ok else "outside"} +-{args.tolerance}); plot: {args.out}')
  return 0 if ok else 1
