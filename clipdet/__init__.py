"""clipdet: batch detection of AI-generated images with frozen CLIP features and linear heads.

Importing the package is cheap (no torch): the command lines read their arguments first. The
Python API lives in ``clipdet.api`` (``from clipdet.api import score_images``); the layers are
``clipdet.models`` (registries, weights, factory, preprocessing, heads), ``clipdet.pipeline``
(prepare and infer stages, the local engine, results), ``clipdet.training`` and
``clipdet.evaluation``.
"""

__version__ = "0.1.0"
