"""Shared plumbing, below every pipeline stage.

Holds: ``errors`` (AdvkdError, Interrupted), ``version``, ``registry`` (the name -> entry registry
every stage uses), ``settings`` (type-checked dataclass overrides: ``apply_overrides``, ``coerce``,
``field_types``), ``epsilon`` (eps parsing), ``files`` (atomic writes, file hashes), ``runs`` (run
dirs and their files), ``locks``, ``oserrors`` (OS failures as one line), ``distributed`` (torchrun
ranks, collectives, ``pick_device``), ``accel`` (fast paths: compile, bf16, channels-last),
``cpu`` (the CPU feature probe behind accel's CPU defaults) and ``progress`` (the terminal reporter).

May import: nothing of advkd outside ``advkd.core``. Importing this package imports nothing
(``advkd.entry`` imports ``advkd.core.errors`` before torch is loaded), so import the module you need.
"""
