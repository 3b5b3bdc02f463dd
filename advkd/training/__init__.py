"""Pipeline stage 4, training: the one training loop of ``pretrain-teacher`` and ``distill``.

Holds: ``config`` (``TrainConfig``, presets, ``resolve_config``, ``--set`` parsing), ``teachers``
(resolving teacher checkpoints), ``resume`` (resume state, what "resumable" means), ``loop``
(``prepare``, ``open_run_dir``, ``fit`` and ``run``, which chains them), ``dry_run`` (the config
and run dir a run would use, without it: ``--print-config``) and ``preset_catalog`` (the presets
by name, where each lives: ``advkd presets list|show``).

May import: ``advkd.core``, ``advkd.data``, ``advkd.models``, ``advkd.attacks``, ``advkd.methods``
and ``advkd.evaluation`` (the per-epoch monitor calls ``evaluation.evaluate.evaluate`` and stamps
records with ``evaluation.records``); evaluation never imports training. Importing this package
imports nothing; import the module you need.
"""
