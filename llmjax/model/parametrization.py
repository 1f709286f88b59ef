"""Initialization scales and per-group learning-rate multipliers, in one place.

Every parameter belongs to a group, named by the module that creates it. Init
scales (used by the layers) and learning-rate multipliers and weight-decay
membership (used by the optimizer) are functions of the group only, so a new
parametrization (muP, for example) replaces this file and nothing else.

Standard parametrization (the default): hidden matrices ~ N(0, 1/fan_in), output
projections of each residual branch further scaled by 1/sqrt(2L) (GPT-2),
embeddings ~ N(0, init_std), all learning-rate multipliers 1.
"""

import math

from llmjax.model.config import ModelConfig

EMBEDDING = 'embedding'  # token and position tables (and the tied output head)
UNEMBED = 'unembed'  # untied output head
HIDDEN = 'hidden'  # matrices reading the residual stream
OUTPUT = 'output'  # matrices writing into the residual stream
NORM = 'norm'  # scales of normalization layers
BIAS = 'bias'  # additive biases
GROUPS = (EMBEDDING, UNEMBED, HIDDEN, OUTPUT, NORM, BIAS)

# Groups that weight decay skips by default: shrinking them has no regularizing use.
NO_DECAY_GROUPS = (EMBEDDING, NORM, BIAS)


def init_std(cfg: ModelConfig, group: str, fan_in: int) -> float:
  if group == EMBEDDING:
    return cfg.init_std
  if group == UNEMBED:
    return 1.0 / fan_in  # small logits at init whatever the width
  if group == HIDDEN:
    return 1.0 / math.sqrt(fan_in)
  if group == OUTPUT:
    return 1.0 / math.sqrt(fan_in * 2 * cfg.num_layers)
  raise ValueError(f'group {group!r} has no random init')


def lr_multiplier(cfg: ModelConfig, group: str) -> float:
  del cfg, group
  return 1.0
