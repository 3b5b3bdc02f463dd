"""Pipeline stage 5, evaluation: attack a model, summarise, record.

Holds: ``evaluate`` (clean and robust accuracy of one model under a list of attacks,
worst case, W-Robust), ``suites`` (named attack suites), ``sanity`` (sanity flags on accuracies),
``records`` (the results.jsonl record format: append, read, environment stamps) and ``driver``
(what ``advkd attack`` does: checkpoints x suite -> records, transfer attacks included).

May import: ``advkd.core``, ``advkd.data``, ``advkd.models``, ``advkd.attacks``. Never
``advkd.training`` (so a model can be evaluated without the training stack) nor ``advkd.report``.
Importing this package imports nothing; import the module you need.
"""
