"""The option registries are the one list of each kind: the README's option list names exactly
their entries, and configs.build accepts exactly them (and names them when refusing)."""

import pathlib
import re

import pytest

from llmjax import configs, optim
from llmjax.model import options

README = (pathlib.Path(__file__).resolve().parents[1] / 'README.md').read_text()

REGISTRIES = {
    'norm': options.NORMS, 'positions': options.POSITIONS, 'mlp': options.MLPS,
    'remat': options.REMAT_POLICIES, 'rope_scaling': options.ROPE_SCALINGS,
    'optim.name': optim.OPTIMIZERS,
    'optim.schedule': optim.SCHEDULES,
}


@pytest.mark.parametrize('field', REGISTRIES)
def test_the_readme_lists_every_entry_of_each_registry(field):
  listed = re.findall(rf'`{re.escape(field)}=([\w|.]+)`', README)
  assert listed, f'README.md has no `{field}=a|b|...` option list'
  assert listed[0].split('|') == list(REGISTRIES[field]), (
      f'README.md lists {field}={listed[0]}; the registry has {"|".join(REGISTRIES[field])}')


@pytest.mark.parametrize('field', ['norm', 'positions', 'mlp', 'remat', 'rope_scaling'])
def test_validation_accepts_the_registry_and_names_it_when_refusing(field):
  for name in REGISTRIES[field]:
    config = configs.defaults()
    config.model[field] = name
    configs.build(config, num_devices=1)
  config = configs.defaults()
  config.model[field] = 'nonesuch'
  with pytest.raises(configs.ConfigError, match=rf"model.{field}: unknown option 'nonesuch'; "
                     rf"choose one of {', '.join(REGISTRIES[field])}"):
    configs.build(config, num_devices=1)
