"""Prediction: checkpoints, output heads, GP conditioning, kernel re-fit, blocks, COGs.

- :mod:`~geosparse.inference.checkpoints`: loading checkpoints as weights and plain
  data (no unpickling of untrusted objects);
- :mod:`~geosparse.inference.heads`: TorchGeo's tasks as output heads;
- :mod:`~geosparse.inference.conditioning` and :mod:`~geosparse.inference.refit`:
  the GP posterior given revealed points, and the kernel re-fitted on them;
- :mod:`~geosparse.inference.predictor`: :class:`Predictor`, a task as a block
  function;
- :mod:`~geosparse.inference.blocks` and :mod:`~geosparse.inference.predict`: block
  prediction streamed into COGs with STAC Items;
- :mod:`~geosparse.inference.instances`: instance masks and polygons from one point
  per object (:func:`~geosparse.inference.instances.predict_instances`), and
  without points from a stage-2 Mask R-CNN
  (:func:`~geosparse.inference.instances.predict_detected_instances`);
- :mod:`~geosparse.inference.stage2`: stage 2 from Python
  (:func:`~geosparse.inference.stage2.train_stage2`,
  :func:`~geosparse.inference.stage2.predict_stage2`).
"""

from .checkpoints import UntrustedCheckpointError, load_task, task_class_for
from .conditioning import GPConditioning, RevealedPoints
from .heads import head_for
from .predictor import Predictor

__all__ = [
    'GPConditioning',
    'Predictor',
    'RevealedPoints',
    'UntrustedCheckpointError',
    'head_for',
    'load_task',
    'task_class_for',
]
