"""Experiment configs: defaults, validation, and unpacking into frozen dataclasses.

An experiment file's `get_config()` returns an `ml_collections.ConfigDict` with
one section per dataclass below. `build` is the one place where that dict is
checked and turned into an `Experiment`; nothing else reads the ConfigDict.
Every problem is reported at once, naming the field, before any compile or
file write.
"""

import dataclasses
import difflib
import importlib.util
import pathlib
import re
import sys
import traceback
import typing

from absl import flags
from ml_collections import config_dict, config_flags

from llmjax import optim, profiler, sharding
from llmjax.checkpoint import CheckpointConfig
from llmjax.data import domains, objectives, pipeline, sources, synthetic, tokenizers
from llmjax.finetune.config import TASKS as FINETUNE_TASKS
from llmjax.finetune.config import TRUNCATIONS, FinetuneConfig
from llmjax.metrics import MetricsConfig
from llmjax.model import config as model_config
from llmjax.model import options
from llmjax.model import lora, parametrization
from llmjax.model.config import ModelConfig
from llmjax.model.lora import LoraConfig
from llmjax.optim import OptimConfig
from llmjax.sharding import MeshConfig
from llmjax.step import NONFINITE_POLICIES, TrainConfig, abstract_model


class ConfigError(ValueError):
  """An invalid experiment config; the message names every offending field."""


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  # Named held-out sets evaluated at every train.eval_every (eval/NAME/loss, bits_per_byte):
  # NAME=SOURCE entries, or a bare stdlib_code | stdlib_tests | stdlib_text (data.domains).
  domains: tuple[str, ...] = ()
  # Downstream tasks scored during training (python -m llmjax.eval's --tasks: built-in names,
  # jsonl:PATH:KIND[:...]), comma-separated; results in metrics.jsonl (task/NAME/METRIC)
  # and RUN/eval/STEP.json. Names are resolved before anything is written.
  tasks: str = ''
  tasks_every: int = 0  # steps between task evaluations; 0: only at the last step
  tasks_max_examples: int = -1  # per task; -1: each task's own default


@dataclasses.dataclass(frozen=True)
class Experiment:
  model: ModelConfig
  data: pipeline.DataConfig
  optim: OptimConfig
  train: TrainConfig
  mesh: MeshConfig
  metrics: MetricsConfig
  checkpoint: CheckpointConfig
  eval: EvalConfig = EvalConfig()
  finetune: FinetuneConfig = FinetuneConfig()  # the task: lm, sft or classify
  lora: LoraConfig = LoraConfig()  # parameter-efficient fine-tuning (rank 0: off)
  init_from: str = ''  # warm start: another run's WORKDIR[:STEP], or hf:PATH


SECTIONS = {f.name: f.type for f in dataclasses.fields(Experiment)
            if dataclasses.is_dataclass(f.type)}
TOP_LEVEL = {'init_from': str}


def defaults() -> config_dict.ConfigDict:
  """A ConfigDict with every section and field at its default.

  Model fields start unset (typed placeholders): a `model.preset` fills them and
  fields set explicitly win over the preset.
  """
  config = config_dict.ConfigDict()
  hints = typing.get_type_hints(ModelConfig)
  model = {f.name: config_dict.placeholder(hints[f.name])
           for f in dataclasses.fields(ModelConfig)}
  config.model = config_dict.ConfigDict({'preset': '', **model})
  for name, cls in SECTIONS.items():
    if name != 'model':
      config[name] = config_dict.ConfigDict(dataclasses.asdict(cls()))
  config.init_from = ''
  return config


def build(config: config_dict.ConfigDict, num_devices: int) -> Experiment:
  """Validates `config` for a run on `num_devices` and unpacks it; raises ConfigError."""
  errors: list[str] = []
  unknown = set(config.keys()) - set(SECTIONS) - set(TOP_LEVEL)
  for key in sorted(unknown):
    errors.append(_unknown('config', key, [*SECTIONS, *TOP_LEVEL]))
  top = {key: config.get(key, '') for key in TOP_LEVEL}
  for key, value in top.items():
    if not isinstance(value, TOP_LEVEL[key]):
      errors.append(f'config.{key}: expected {TOP_LEVEL[key].__name__}, got {value!r}')
  sections = {}
  for name, cls in SECTIONS.items():
    values = dict(config.get(name) or {})
    if name == 'model':
      values = _resolve_model(values, errors)
    sections[name] = _build_section(name, cls, values, errors)
  if errors:
    raise ConfigError('\n'.join(errors))
  exp = _data_defaults(Experiment(**sections, **top))
  _check_semantics(exp, num_devices, errors)
  if errors:
    raise ConfigError('\n'.join(errors))
  return exp


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
  """(argv without them, the --config.SECTION.FIELD=VALUE overrides in order)."""
  rest, overrides, i = [], [], 0
  while i < len(argv):
    arg = argv[i]
    if re.match(r'^--?(no)?config\.', arg):
      overrides.append(arg)
      if '=' not in arg and i + 1 < len(argv) and not argv[i + 1].startswith('-'):
        overrides.append(argv[i + 1])  # --config.a.b VALUE
        i += 1
    else:
      rest.append(arg)
    i += 1
  return rest, overrides


def flags_parser(prog: str, overrides: list[str]):
  """An absl `flags_parser` for an entry point: the --config.* overrides go into `overrides`
  (for `load_file`), the rest to absl; a bad flag is one message and exit status 2."""

  def parse(argv: list[str]) -> list[str]:
    rest, overrides[:] = split_overrides(argv)
    try:
      return flags.FLAGS(rest)
    except flags.Error as e:
      print(f'{prog}: {e} (see --help)', file=sys.stderr)
      sys.exit(2)

  return parse


def load_file(spec: str, overrides: list[str] = ()) -> config_dict.ConfigDict:
  """The locked ConfigDict of an experiment file `PATH[:VARIANT]` with `--config.*`
  overrides applied (ml_collections' parsing, did-you-mean included). Raises
  ConfigError with one message for a file that is missing, does not parse, raises,
  has no get_config, returns something other than a ConfigDict, is given a variant
  it does not know, or an override that names no field or has a bad value."""
  path, _, variant = spec.partition(':')
  if not pathlib.Path(path).is_file():
    raise ConfigError(f'--config: experiment file not found: {path}')
  values = flags.FlagValues()
  argv = ['llmjax', f'--config={spec}', *overrides]
  config_flags.DEFINE_config_file('config', None, '', flag_values=values, lock_config=True,
                                  sys_argv=argv)
  try:
    values(argv)
    config = values.config
    if not isinstance(config, dict):
      config.keys()  # a file that failed to load is an object that raises only when used
  except SyntaxError as e:
    raise ConfigError(f'--config: {path} does not parse: {e.msg} (line {e.lineno})') from None
  except flags.Error as e:
    raise ConfigError(_clean(str(e))) from None
  except (KeyError, AttributeError) as e:
    raise ConfigError(_override_problem(e, path, overrides)) from None
  except Exception as e:  # the experiment file's own code raised
    raise ConfigError(f'--config: loading {path} raised {type(e).__name__}: {e}'
                      f'{_where(e, path)}') from None
  if not isinstance(config, config_dict.ConfigDict):
    raise ConfigError(f'--config: get_config() of {path} returned a {type(config).__name__}, '
                      'not an ml_collections.ConfigDict; start from llmjax.configs.defaults()')
  if variant:
    _check_variant(path, variant, config, overrides)
  return config


def _clean(message: str) -> str:
  while len(message) > 1 and message[0] == message[-1] and message[0] in '"\'':
    message = message[1:-1]
  return message.replace('\\n', '\n').replace("\\'", "'").replace('\n', '; ')


def _override_problem(e: Exception, path: str, overrides) -> str:
  message = _clean(str(e))
  if 'get_config' in message:
    return f'--config: {path} has no get_config() function'
  key, _, hint = message.partition(';')
  key = key.strip('"\' ')
  named = [o.split('=')[0] for o in overrides if key in o.split('=')[0].split('.')]
  flag = named[0] if named else f'--config override {key!r}'
  return f'{flag}: no such field in the config' + (f';{hint}' if hint else '')


def _where(e: Exception, path: str) -> str:
  frames = [f for f in traceback.extract_tb(e.__traceback__)
            if pathlib.Path(f.filename).resolve() == pathlib.Path(path).resolve()]
  return f' at line {frames[-1].lineno}' if frames else ''


_VARIANT_TEST = re.compile(r"""variant\s*==\s*['"]([^'"]+)['"]""")


def _check_variant(path: str, variant: str, config, overrides) -> None:
  """A variant that changes nothing is unknown (a misspelling would otherwise
  silently run the default experiment)."""
  if load_file(path, overrides).to_dict() != config.to_dict():
    return
  known = sorted(set(_VARIANT_TEST.findall(pathlib.Path(path).read_text(errors='replace'))))
  close = difflib.get_close_matches(variant, known, n=1)
  hint = (f'; did you mean {close[0]!r}?' if close else '') + (
      f' Known: {", ".join(known)}' if known else '')
  raise ConfigError(f'--config: {path} has no variant {variant!r} (it changes nothing in the '
                    f'config){hint}')


def build_model_config(config: config_dict.ConfigDict) -> ModelConfig:
  """The resolved ModelConfig of a config (preset and explicit fields), checked on its own;
  for sweeps that size trials before building whole experiments."""
  errors: list[str] = []
  cfg = _build_section('model', ModelConfig, _resolve_model(dict(config.model), errors), errors)
  if errors:
    raise ConfigError('\n'.join(errors))
  return cfg


def as_dict(exp: Experiment) -> dict:
  """The resolved experiment, as written to config.json."""
  return dataclasses.asdict(exp)


# Fields that moved between sections; config.json files written before the move
# are read with the field in its new place.
MOVED_FIELDS = {('checkpoint', 'nonfinite'): 'train',
                ('checkpoint', 'max_consecutive_skips'): 'train'}


def from_dict(saved: dict) -> Experiment:
  """The inverse of `as_dict`, for a config.json (extra top-level keys such as
  data_info are ignored; fields added since it was written take their defaults).
  Raises ConfigError naming fields that no longer exist."""
  sections = {name: dict(saved.get(name) or {}) for name in SECTIONS}
  for (old, field), new in MOVED_FIELDS.items():
    if field in sections[old]:
      sections[new].setdefault(field, sections[old].pop(field))
  errors: list[str] = []
  built = {name: _build_section(name, cls, sections[name], errors)
           for name, cls in SECTIONS.items()}
  if errors:
    raise ConfigError('\n'.join(errors))
  return Experiment(**built, **{key: saved.get(key, '') for key in TOP_LEVEL})


def _unknown(section: str, key: str, known) -> str:
  close = difflib.get_close_matches(key, list(known), n=1)
  hint = f'; did you mean {close[0]!r}?' if close else ''
  return f'{section}.{key}: unknown key{hint}'


def _resolve_model(values: dict, errors: list[str]) -> dict:
  """Dataclass defaults <- preset <- fields set in the config; head_dim defaults to D/N."""
  preset = values.pop('preset', '')
  explicit = {k: v for k, v in values.items() if v is not None}
  base = {}
  if preset:
    if preset not in model_config.PRESETS:
      errors.append(f'config.model.preset: unknown preset {preset!r}; known: '
                    f'{", ".join(model_config.PRESETS)}')
    else:
      base = dict(model_config.PRESETS[preset])
  merged = {**base, **explicit}
  if 'head_dim' not in merged:
    d_model = merged.get('d_model', ModelConfig.d_model)
    num_heads = merged.get('num_heads', ModelConfig.num_heads)
    if isinstance(d_model, int) and isinstance(num_heads, int) and num_heads > 0:
      merged['head_dim'] = d_model // num_heads
  return merged


def _build_section(name: str, cls, values: dict, errors: list[str]):
  hints = typing.get_type_hints(cls)
  fields = {f.name for f in dataclasses.fields(cls)}
  kwargs = {}
  for key, value in values.items():
    if key not in fields:
      errors.append(_unknown(f'config.{name}', key, fields))
    elif not _type_ok(value, hints[key]):
      errors.append(f'config.{name}.{key}: expected {_type_name(hints[key])}, got '
                    f'{type(value).__name__} {value!r}')
    else:
      kwargs[key] = float(value) if hints[key] is float else value
      if typing.get_origin(hints[key]) is tuple or hints[key] is tuple:
        kwargs[key] = _to_tuple(value)
  return cls(**kwargs)


def _type_ok(value, hint) -> bool:
  if hint is bool:
    return isinstance(value, bool)
  if hint is int:
    return isinstance(value, int) and not isinstance(value, bool)
  if hint is float:
    return isinstance(value, int | float) and not isinstance(value, bool)
  if hint is str:
    return isinstance(value, str)
  if hint is tuple or typing.get_origin(hint) is tuple:
    return isinstance(value, tuple | list)
  return True


def _type_name(hint) -> str:
  return getattr(hint, '__name__', str(hint))


def _to_tuple(value):
  return tuple(_to_tuple(v) if isinstance(v, list | tuple) else v for v in value)


def _choice(errors, field: str, value, allowed) -> None:
  if value not in allowed:
    errors.append(f'config.{field}: unknown option {value!r}; choose one of {", ".join(allowed)}')


def _positive(errors, field: str, value) -> None:
  if not value > 0:
    errors.append(f'config.{field}: must be positive, got {value!r}')


def _option_fields(exp: Experiment) -> list[tuple[str, object, object]]:
  """(field, value, its registry or tuple of options) for every field that names an option."""
  m, d, o = exp.model, exp.data, exp.optim
  return [('model.norm', m.norm, options.NORMS),
          ('model.positions', m.positions, options.POSITIONS),
          ('model.mlp', m.mlp, options.MLPS),
          ('model.remat', m.remat, options.REMAT_POLICIES),
          ('model.arch', m.arch, options.ARCHITECTURES),
          ('model.norm_position', m.norm_position, options.NORM_POSITIONS),
          ('model.attention_impl', m.attention_impl, model_config.ATTENTION_IMPLS),
          ('model.param_dtype', m.param_dtype, model_config.DTYPES),
          ('model.dtype', m.dtype, model_config.DTYPES),
          ('model.parametrization', m.parametrization, parametrization.PARAMETRIZATIONS),
          ('data.objective', d.objective, pipeline.OBJECTIVES),
          ('optim.name', o.name, optim.OPTIMIZERS),
          ('optim.schedule', o.schedule, optim.SCHEDULES),
          ('optim.weight_decay_mode', o.weight_decay_mode, optim.WEIGHT_DECAY_MODES)]


def _check_semantics(exp: Experiment, num_devices: int, errors: list[str]) -> None:
  m, d, o, t = exp.model, exp.data, exp.optim, exp.train
  for field, value, allowed in _option_fields(exp):
    _choice(errors, field, value, allowed)
  for field in ('vocab_size', 'd_model', 'num_layers', 'num_heads', 'num_kv_heads', 'head_dim',
                'mlp_dim', 'max_len'):
    _positive(errors, f'model.{field}', getattr(m, field))
  for field, value in (('train.steps', t.steps), ('optim.lr', o.lr), ('data.seq_len', d.seq_len),
                       ('data.global_batch_size', d.global_batch_size),
                       ('train.microbatches', t.microbatches), ('train.log_every', t.log_every),
                       ('train.eval_every', t.eval_every),
                       ('train.eval_batches', t.eval_batches)):
    _positive(errors, field, value)
  _check_not_negative(exp, errors)
  if errors:
    return  # the checks below assume sane values
  if m.d_model % m.num_heads:
    errors.append(f'config.model.d_model={m.d_model} is not divisible by '
                  f'model.num_heads={m.num_heads}')
  if m.num_heads % m.num_kv_heads:
    errors.append(f'config.model.num_heads={m.num_heads} is not divisible by '
                  f'model.num_kv_heads={m.num_kv_heads}')
  _check_rope(m, errors)
  if not 0.0 <= m.dropout < 1.0:
    errors.append(f'config.model.dropout={m.dropout} must be in [0, 1)')
  if d.seq_len > m.max_len:
    errors.append(f'config.data.seq_len={d.seq_len} exceeds model.max_len={m.max_len}; set '
                  f'--config.data.seq_len={m.max_len} (or less), or a longer model.max_len')
  _choice(errors, 'data.packing', d.packing, pipeline.PACKINGS)
  _choice(errors, 'train.nonfinite', t.nonfinite, NONFINITE_POLICIES)
  if exp.checkpoint.keep_last < 1:
    errors.append(f'config.checkpoint.keep_last={exp.checkpoint.keep_last} must be at least 1')
  _check_tokenizer(m, d, errors)
  _check_arch(exp, errors)
  if d.source.startswith('synthetic:') and t.sample_tokens > 0:
    try:
      synthetic.SyntheticTokenizer(2).encode(t.sample_prompt)
    except ValueError as e:
      errors.append(f'config.train.sample_prompt: {e}; or set train.sample_tokens=0')
  if not 0.0 < d.eval_fraction < 0.5:
    errors.append(f'config.data.eval_fraction={d.eval_fraction} must be in (0, 0.5)')
  if o.warmup_steps < 0 or o.warmup_steps > t.steps:
    errors.append(f'config.optim.warmup_steps={o.warmup_steps} must be in [0, train.steps]')
  unknown_groups = set(o.no_decay_groups) - set(parametrization.GROUPS)
  if unknown_groups:
    errors.append(f'config.optim.no_decay_groups: unknown groups {sorted(unknown_groups)}; '
                  f'known: {", ".join(parametrization.GROUPS)}')
  _check_parametrization(exp, errors)
  _check_eval(exp, errors)
  _check_finetune(exp, errors)
  _check_mesh(exp, num_devices, errors)
  _check_lora(exp, errors)


def _check_lora(exp: Experiment, errors: list[str]) -> None:
  """LoRA's rank and alpha, and its targets against the model's parameter names (on an
  abstract model, so only once the model fields are sane)."""
  if lora.enabled(exp.lora) and not parametrization.is_sp(exp.model):
    errors.append(f'config.lora.rank={exp.lora.rank}: LoRA trains in sp scale; '
                  f'model.parametrization={exp.model.parametrization!r} sets per-tensor '
                  f'rules for the base tensors, not for adapters')
  params = abstract_model(exp.model)[1] if lora.enabled(exp.lora) and not errors else None
  errors += [f'config.{p}' for p in lora.problems(params, exp.lora)]


def _data_defaults(exp: Experiment) -> Experiment:
  """Defaults that depend on the data: the text default of train.sample_prompt ('def ')
  means nothing to a synthetic source, whose sample then starts a document (an empty
  prompt after end-of-text); a prompt set by hand is kept, and checked."""
  if exp.data.source.startswith('synthetic:') and exp.train.sample_prompt == TrainConfig.sample_prompt:
    exp = dataclasses.replace(exp, train=dataclasses.replace(exp.train, sample_prompt=''))
  arch = options.ARCHITECTURES.get(exp.model.arch)  # an unknown name is reported later
  if arch and not arch.decoder_only and exp.train.sample_tokens == TrainConfig.sample_tokens:
    exp = dataclasses.replace(exp, train=dataclasses.replace(exp.train, sample_tokens=0))
  return exp


def _check_arch(exp: Experiment, errors: list[str]) -> None:
  """The architecture, its objective, and what an encoder cannot do."""
  m, d = exp.model, exp.data
  arch = options.ARCHITECTURES[m.arch]
  if d.objective not in arch.objectives:
    errors.append(f'config.data.objective={d.objective!r} does not train model.arch={m.arch!r}'
                  f'; it trains on {" or ".join(map(repr, arch.objectives))}')
  if d.objective == 'mlm' and not 0.0 < d.mask_rate < 1.0:
    errors.append(f'config.data.mask_rate={d.mask_rate} must be in (0, 1)')
  bidirectional = not arch.causal or arch.cross_attention  # an encoder (stack)
  if bidirectional and m.attention_impl == 'blockwise':
    errors.append(f'config.model.attention_impl=\'blockwise\' computes causal attention '
                  f'only; model.arch={m.arch!r} attends both ways: use auto, einsum, xla or cudnn')
  if not arch.decoder_only and exp.eval.tasks:
    errors.append(f'config.eval.tasks={exp.eval.tasks!r}: the tasks score continuations with a '
                  f'decoder; model.arch={m.arch!r} cannot take them yet')
  if not arch.decoder_only and exp.train.sample_tokens > 0:
    errors.append(f'config.train.sample_tokens={exp.train.sample_tokens}: model.arch='
                  f'{m.arch!r} does not generate text from a prompt; set train.sample_tokens=0')
  _check_encoder_decoder(exp, arch, errors)


def _check_encoder_decoder(exp: Experiment, arch: options.ArchKind, errors: list[str]) -> None:
  """Encoder-decoder fields (decoder depth, relative positions, unscaled scores) and the
  span objective's own settings."""
  m, d = exp.model, exp.data
  crossing = [name for name, kind in options.ARCHITECTURES.items() if kind.cross_attention]
  if m.num_decoder_layers < 0 or (m.num_decoder_layers and not arch.cross_attention):
    errors.append(f'config.model.num_decoder_layers={m.num_decoder_layers}: the decoder stack '
                  f'of model.arch={" or ".join(map(repr, crossing))} (0: as deep as the '
                  f'encoder); model.arch={m.arch!r} has num_layers only')
  if options.POSITIONS[m.positions].relative and not (
      m.relative_buckets >= 4 and m.relative_max_distance > m.relative_buckets // 2):
    errors.append(f'config.model: positions=relative needs relative_buckets >= 4 (got '
                  f'{m.relative_buckets}) and relative_max_distance > relative_buckets // 2 '
                  f'(got {m.relative_max_distance}; T5: 32 and 128)')
  if not parametrization.is_sp(m) and (arch.cross_attention or not m.scale_scores):
    errors.append(f'config.model.parametrization={m.parametrization!r}: muP\'s per-tensor '
                  f'rules cover one stack with scaled scores; model.arch={m.arch!r} with '
                  f'scale_scores={m.scale_scores} trains in sp only (set parametrization=sp)')
  if d.objective != 'span':
    return
  if d.packing != 'first_fit':
    errors.append(f'config.data.packing={d.packing!r}: data.objective=span packs whole '
                  f'examples (an encoder input with its targets); set data.packing=first_fit')
  if not 0.0 < d.noise_density < 1.0 or d.mean_span < 1.0:
    errors.append(f'config.data: span corruption needs noise_density in (0, 1) (got '
                  f'{d.noise_density}) and mean_span >= 1 (got {d.mean_span})')
  elif exp.finetune.task != 'lm':
    errors.append(f'config.finetune.task={exp.finetune.task}: fine-tuning encoder-decoders '
                  f'is not supported yet (finetune.task=lm trains on data.objective)')


def _check_rope(m: ModelConfig, errors: list[str]) -> None:
  if options.POSITIONS[m.positions].rotary and m.head_dim % 2:
    errors.append(f'config.model.head_dim={m.head_dim} must be even for rope positions')
  _choice(errors, 'model.rope_scaling', m.rope_scaling, options.ROPE_SCALINGS)
  if m.rope_scaling == 'llama3' and not (m.rope_scaling_factor > 0 and m.rope_original_max_len > 0
                                         and 0 < m.rope_low_freq_factor < m.rope_high_freq_factor):
    errors.append(f'config.model: rope_scaling=llama3 needs rope_scaling_factor > 0 '
                  f'(got {m.rope_scaling_factor}), rope_original_max_len > 0 (got '
                  f'{m.rope_original_max_len}) and 0 < rope_low_freq_factor < '
                  f'rope_high_freq_factor (got {m.rope_low_freq_factor}, '
                  f'{m.rope_high_freq_factor})')


def _check_eval(exp: Experiment, errors: list[str]) -> None:
  """eval.domains (cheap checks of their sources) and the task cadence; task names are
  resolved by the loop before the workdir is touched (llmjax.eval sits above configs)."""
  e = exp.eval
  errors += [f'config.{p}' for p in domains.problems(e.domains, exp.data)]
  if e.tasks_every < 0:
    errors.append(f'config.eval.tasks_every={e.tasks_every} must not be negative '
                  f'(0: only at the last step)')
  if e.tasks_max_examples == 0 or e.tasks_max_examples < -1:
    errors.append(f'config.eval.tasks_max_examples={e.tasks_max_examples} must be -1 '
                  f"(each task's own default) or positive")


def _check_finetune(exp: Experiment, errors: list[str]) -> None:
  f = exp.finetune
  _choice(errors, 'finetune.task', f.task, FINETUNE_TASKS)
  _choice(errors, 'finetune.truncate', f.truncate, TRUNCATIONS)
  if f.task not in ('sft', 'classify'):
    return
  if not f.train_data.startswith(('builtin:', 'jsonl:', 'tfds:')):
    errors.append(f'config.finetune.train_data={f.train_data!r}: finetune.task={f.task} needs '
                  f'builtin:NAME, tfds:NAME or jsonl:PATH')
  if f.train_data.startswith('jsonl:') and not f.eval_data.startswith('jsonl:'):
    errors.append(f'config.finetune.eval_data={f.eval_data!r}: JSONL training data needs a '
                  f'held-out jsonl:PATH')
  if exp.data.packing != 'first_fit':
    errors.append(f'config.data.packing={exp.data.packing!r}: finetune.task={f.task} packs '
                  f'whole examples; set data.packing=first_fit')
  arch = options.ARCHITECTURES.get(exp.model.arch)
  if f.task == 'sft' and arch and not arch.causal:
    errors.append(f'config.finetune.task=sft needs a causal model; model.arch='
                  f'{exp.model.arch!r} is not (use finetune.task=classify)')
  labelled = f.train_data.startswith(('builtin:', 'tfds:'))  # the task brings its labels
  if f.task == 'classify' and not labelled and not f.labels and f.num_labels < 2:
    errors.append('config.finetune.task=classify needs finetune.labels (the declared label '
                  'set) or finetune.num_labels >= 2')
  if f.labels and f.num_labels and f.num_labels != len(f.labels):
    errors.append(f'config.finetune.num_labels={f.num_labels} but finetune.labels has '
                  f'{len(f.labels)} entries')


def _check_parametrization(exp: Experiment, errors: list[str]) -> None:
  """muP/CompleteP fields (llmjax.model.parametrization) and what they cannot combine with."""
  m, o = exp.model, exp.optim
  errors += parametrization.problems(m)
  if o.weight_decay_mode == 'independent' and o.name not in ('adamw', 'lion'):
    errors.append(f'config.optim.weight_decay_mode=independent supports adamw and lion, not '
                  f'{o.name}')
  if parametrization.is_sp(m):
    return
  if exp.init_from.startswith('hf:'):
    errors.append(f'config.init_from={exp.init_from!r}: a Hugging Face model is trained in sp '
                  f'scale; under model.parametrization={m.parametrization!r} its attention, '
                  f'logit and branch multipliers would change the function it computes. Warm '
                  f'start it with model.parametrization=sp')
  if o.name == 'adafactor':
    errors.append(f'config.optim.name=adafactor: model.parametrization={m.parametrization!r} '
                  f'sets Adam-family LR rules (adamw, lion); adafactor scales updates by the '
                  f'parameter scale')


def _check_not_negative(exp: Experiment, errors: list[str]) -> None:
  """Fields where 0 means off and a negative value means nothing; optional packages."""
  c, o, t = exp.checkpoint, exp.optim, exp.train
  for field, value, meaning in (
      ('checkpoint.every_steps', c.every_steps, '0: no step cadence'),
      ('checkpoint.every_minutes', c.every_minutes, '0: no time cadence'),
      ('checkpoint.keep_every', c.keep_every, '0: none'),
      ('optim.clip_norm', o.clip_norm, '0: no clipping'),
      ('optim.weight_decay', o.weight_decay, '0: none'),
      ('optim.eps', o.eps, None), ('optim.min_lr_ratio', o.min_lr_ratio, None),
      ('train.z_loss', t.z_loss, '0: none'), ('train.sample_tokens', t.sample_tokens, '0: no sample')):
    if not value >= 0:  # also NaN
      errors.append(f'config.{field}={value!r} must not be negative' +
                    (f' ({meaning})' if meaning else ''))
  if exp.metrics.wandb and importlib.util.find_spec('wandb') is None:
    errors.append('config.metrics.wandb=True needs the wandb package: pip install wandb '
                  '(or leave metrics.wandb=False)')
  errors += [f'config.{p}' for p in profiler.problems(exp.metrics.profile_steps)]


def _check_tokenizer(m: ModelConfig, d: pipeline.DataConfig, errors: list[str]) -> None:
  """The model's embedding must hold every token id the data can produce."""
  try:
    vocab = sources.vocab_size(d.source, d.tokenizer)
  except (ValueError, FileNotFoundError) as e:
    errors.append(f'config.data: {e}')
    return
  if vocab > m.vocab_size:
    errors.append(f'config.model.vocab_size={m.vocab_size} is smaller than the vocabulary of '
                  f'data.tokenizer={d.tokenizer!r} ({vocab} tokens)')
  elif d.objective == 'mlm' and vocab + 1 > m.vocab_size:
    errors.append(f'config.model.vocab_size={m.vocab_size} has no room for the mask token of '
                  f'data.objective=\'mlm\' (id {vocab}, one past data.tokenizer={d.tokenizer!r}'
                  f'): set model.vocab_size={vocab + 1}')
  elif d.objective == 'span' and 0 < d.noise_density < 1 and d.mean_span >= 1:
    _check_sentinels(m, d, errors)


def _check_sentinels(m: ModelConfig, d: pipeline.DataConfig, errors: list[str]) -> None:
  """Span corruption's sentinels exist (the tokenizer's own, or ids past a byte tokenizer's)
  and fit in the model's embedding."""
  try:
    kind, _, spec = d.source.partition(':')
    tokenizer = (synthetic.SyntheticTokenizer(synthetic.parse_spec(spec).vocab)
                 if kind == 'synthetic' else tokenizers.load(d.tokenizer))
    span = pipeline.span_corruption(tokenizer, d)
  except objectives.ObjectiveError as e:
    errors.append(f'config.{e}')
    return
  if max(span.sentinels) >= m.vocab_size:
    errors.append(f'config.model.vocab_size={m.vocab_size} has no room for the '
                  f'{len(span.sentinels)} sentinels of data.objective=\'span\' (ids '
                  f'{min(span.sentinels)}..{max(span.sentinels)}, past data.tokenizer='
                  f'{d.tokenizer!r}): set model.vocab_size={max(span.sentinels) + 1}')


def _check_mesh(exp: Experiment, num_devices: int, errors: list[str]) -> None:
  mesh, d, t = exp.mesh, exp.data, exp.train
  try:
    shape = sharding.resolve_mesh_shape((mesh.data, mesh.fsdp, mesh.tensor), num_devices)
  except ValueError as e:
    errors.append(f'config.mesh: {e}')
    return
  if mesh.dcn_data < 1 or shape[0] % mesh.dcn_data:
    errors.append(f'config.mesh.dcn_data={mesh.dcn_data} must be a positive divisor of the '
                  f'data axis ({shape[0]})')
  if not all(isinstance(r, tuple) and len(r) == 2 for r in mesh.rules):
    errors.append('config.mesh.rules: expected pairs (logical name, mesh axis or axes or None)')
    return
  for name, target in mesh.rules:
    if name not in sharding.LOGICAL_AXES:
      errors.append(_unknown('config.mesh.rules', name, sharding.LOGICAL_AXES))
    axes = (target,) if isinstance(target, str) else tuple(target or ())
    for axis in axes:
      if axis not in sharding.MESH_AXES:
        errors.append(f'config.mesh.rules: {name!r} maps to unknown mesh axis {axis!r}; '
                      f'mesh axes: {", ".join(sharding.MESH_AXES)}')
  if errors:
    return
  dp = sharding.data_parallel_size(dict(zip(sharding.MESH_AXES, shape)), mesh.rules)
  if d.global_batch_size % (dp * t.microbatches):
    errors.append(f'config.data.global_batch_size={d.global_batch_size} is not divisible by '
                  f'the data-parallel size {dp} x train.microbatches={t.microbatches} '
                  f'(= {dp * t.microbatches}); mesh {dict(zip(sharding.MESH_AXES, shape))}')
