"""EcoTune's Kubeflow Pipelines components, thin ``@dsl.component`` wrappers over ``ecotune``.

Laid out as in kubeflow/pipelines-components: one folder per component, named after its
function, holding ``component.py`` (the ``@dsl.component``), ``__init__.py`` (exports it),
``metadata.yaml`` (name, description, tier, stability, dependencies, tags, lastVerified),
``OWNERS`` and ``tests/``::

    from components.sample_dataset import sample_dataset
    from components.update_surrogate import update_surrogate
    from components.evaluate_trial import evaluate_trial, evaluate_trial_gpu_op
    from components.control_budget import control_budget
    from components.finalize_study import finalize_study

Each takes the chart's study config (a dict) and the study journal's URI and keeps no state
of its own: the journal is the run's only state, so any step can be retried. Unit tests call
``component.python_func(...)`` directly.

Shared, kfp-free modules beside the folders: :mod:`components._common` (study config ->
library objects), :mod:`components._steps` (the work the steps delegate),
:mod:`components.chart_config` (the chart's study config), :mod:`components.images`
(pinned images). A running step imports only these: the KFP runtime there cannot build
components, so this package imports no component folder by itself (and re-exports none:
``from components import <folder name>`` gives the folder's module, not its component).
"""
