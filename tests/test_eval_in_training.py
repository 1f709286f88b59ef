"""In-training task evaluation's metrics.jsonl keys: metrics, standard errors, chance and
ceiling per metric, and per-domain results, named task/NAME[/DOMAIN]/METRIC."""

from llmjax.eval import in_training


def test_scalars_name_every_metric_bound_and_domain():
  results = {'mc': {'acc': 0.5, 'acc_stderr': 0.1, 'nll': 1.25, 'num_examples': 8,
                    'chance': {'acc': 0.25}, 'ceiling': {'acc': 0.75},
                    'domains': {'code': {'acc': 1.0, 'num_examples': 2, 'chance': {'acc': 0.25}},
                                '': {'acc': 0.25, 'num_examples': 6, 'chance': {'acc': 0.25}}}}}
  assert in_training.scalars(results) == {
      'task/mc/acc': 0.5, 'task/mc/acc_stderr': 0.1, 'task/mc/nll': 1.25,
      'task/mc/acc_chance': 0.25, 'task/mc/acc_ceiling': 0.75,
      'task/mc/code/acc': 1.0, 'task/mc/code/acc_chance': 0.25,
      'task/mc/none/acc': 0.25, 'task/mc/none/acc_chance': 0.25}
