"""The coordinate check: flat under muP across width (and CompleteP across depth), and able
to fail: sp's logit updates grow with width."""

import dataclasses

import numpy as np
import pytest

from llmjax.model.config import ModelConfig
from llmjax.scaling import coord_check as cc
from llmjax.scaling.__main__ import main

WIDTHS = [32, 64, 128, 256]
# Untied head; under mup the readout starts at 0 (TP5's choice), so the logits' change is
# the readout's own O(1) update and not the shrinking product of a hidden update with a
# random head.
BASE = ModelConfig(vocab_size=64, max_len=64, tie_embeddings=False)
MUP = dataclasses.replace(BASE, parametrization='mup', mup_base_width=32,
                          mup_readout_zero_init=True)


# Eight compilations (4 widths x sp, mup): about a minute on 2 idle cores, so the slow
# suite (.ci/run runs it on every commit).
@pytest.fixture(scope='module')
def tables():
  return {name: cc.coord_check(cfg, WIDTHS, depth=2) for name, cfg in (('sp', BASE), ('mup', MUP))}


@pytest.mark.slow
def test_mup_keeps_every_update_flat_in_width(tables):
  slopes = cc.slopes(tables['mup'])
  assert set(slopes.columns) == {'embed', 'attn.0', 'attn.1', 'mlp.0', 'mlp.1', 'final',
                                 'logits'}
  worst, ok = cc.verdict(tables['mup'], 0.15)
  assert ok, f'muP: largest |slope| {worst:.3f} over steps 1-3\n{slopes.round(3)}'
  assert np.isfinite(slopes.loc[1, 'logits'])  # step 1 moves the readout at least


@pytest.mark.slow
def test_sp_fails_the_same_check(tables):
  slopes = cc.slopes(tables['sp'])
  assert (slopes.loc[[2, 3], 'logits'] >= 0.4).all(), slopes.round(3)
  worst, ok = cc.verdict(tables['sp'], 0.15)
  assert not ok and worst > 0.4


@pytest.mark.slow
def test_table_has_both_seeds_and_every_step(tables):
  t = tables['mup']
  assert sorted(t['seed'].unique()) == [0, 1] and sorted(t['step'].unique()) == [0, 1, 2, 3]
  at_init = t[t['step'] == 0]
  assert (at_init['delta'] == 0).all() and (at_init[at_init['site'] != 'logits']['act'] > 0).all()


@pytest.mark.slow
def test_completep_keeps_the_stream_update_flat_in_depth():
  # CompleteP (alpha 1): each branch's update is O(1/L), so the residual stream's and the
  # logits' updates stay O(1) as L grows; muP alone lets the stream's update grow with L.
  depths = [2, 4, 8, 16]
  cp = dataclasses.replace(MUP, parametrization='completep', mup_base_width=64,
                           mup_base_depth=2)
  mup = dataclasses.replace(MUP, mup_base_width=64)
  cp_slopes = cc.slopes(cc.coord_check(cp, depths, 'depth', width=64))
  mup_slopes = cc.slopes(cc.coord_check(mup, depths, 'depth', width=64))
  print('completep', cp_slopes.round(3), 'mup', mup_slopes.round(3), sep='\n')
  assert np.abs(cp_slopes.loc[3, ['embed', 'final', 'logits']]).max() <= 0.15, cp_slopes
  branches = ['attn.0', 'mlp.0', 'attn.1', 'mlp.1']
  np.testing.assert_allclose(cp_slopes.loc[[2, 3], branches], -1.0, atol=0.15)  # 1/L each
  assert mup_slopes.loc[3, 'final'] >= 0.4, mup_slopes.round(3)


def test_describe_parametrization_command(capsys):
  assert main(['describe-parametrization', '--config', 'experiments/base.py',
               '--parametrization', 'mup', '--base-width', '64']) == 0
  out = capsys.readouterr().out
  assert 'blocks/attn/wq' in out and '128/64' in out and 'logits x0.5' in out
  assert main(['describe-parametrization', '--config', 'experiments/base.py',
               '--parametrization', 'mup', '--base-width', '48']) == 2
  assert 'base would have 1.5 heads' in capsys.readouterr().err
