"""Clinical pipelines: a :class:`~dicom_node.series.volume.CTVolume` in, findings out.

:func:`get_pipeline` maps the pipeline names used in the selection rules to
pipeline objects. Pipelines are built on demand; nothing is cached at module
level, and a pipeline whose module imports a deep-learning framework is only
imported when asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Protocol, runtime_checkable

from dicom_node.errors import ConfigurationError
from dicom_node.pipelines.base import AlgorithmIdentity, PipelineResult
from dicom_node.series.volume import CTVolume


@dataclass(frozen=True)
class PipelineEntry:
    """One line of the pipeline registry.

    Attributes
    ----------
    name : str
        Name used in ``[[selection.rules]]``, ``dicom-node analyze --pipeline`` and the
        job table (``"ich"``).
    target : str
        ``"module:Class"`` of the pipeline class; the module is imported only when the
        pipeline is asked for, so a framework it needs (TensorFlow) loads only then.
    summary : str
        One line for ``--help`` texts and the docs.
    takes_model_dir : bool
        The class takes the model package folder (``ich_model_dir`` in the settings)
        as its one argument; otherwise it is built without arguments.
    """

    name: str
    target: str
    summary: str
    takes_model_dir: bool = False


#: The pipelines the node knows. A new pipeline is a new module under ``pipelines/``
#: plus one entry here (docs/architecture.md, "Where to add ...").
REGISTRY: dict[str, PipelineEntry] = {entry.name: entry for entry in (
    PipelineEntry("ich", "dicom_node.pipelines.ich:IchPipeline",
                  "learned 5-subtype intracranial hemorrhage model (docs/ich-model.md)",
                  takes_model_dir=True),
    PipelineEntry("ich-baseline", "dicom_node.pipelines.ich_baseline:IchBaselinePipeline",
                  "classical intracranial hemorrhage detector (docs/ich-baseline.md)"),
    PipelineEntry("cta", "dicom_node.pipelines.cta:CtaLvoPipeline",
                  "CT angiography vessels and large-vessel occlusion (docs/cta.md)"),
)}  # fmt: skip

#: Names accepted by :func:`get_pipeline`, in registry order.
PIPELINE_NAMES: tuple[str, ...] = tuple(REGISTRY)


@runtime_checkable
class Pipeline(Protocol):
    """What the worker needs from a pipeline.

    Attributes
    ----------
    name : str
        Pipeline name as used in the selection rules (``"ich"``).
    algorithm : AlgorithmIdentity
        Algorithm name, version and family, written into the results.
    """

    name: str
    algorithm: AlgorithmIdentity

    def run(self, volume: CTVolume) -> PipelineResult:
        """Analyse one volume.

        Parameters
        ----------
        volume : CTVolume
            The series in HU with its geometry.

        Returns
        -------
        PipelineResult
            Findings with masks on the volume's grid.

        Raises
        ------
        PipelineError
            If the volume cannot be analysed.
        """
        ...


def get_pipeline(name: str, *, ich_model_dir: Path | None = None) -> Pipeline:
    """Return a new pipeline object for a pipeline name.

    Parameters
    ----------
    name : str
        One of :data:`PIPELINE_NAMES`: ``"ich"`` (the learned 5-subtype
        model, :class:`dicom_node.pipelines.ich.IchPipeline`),
        ``"ich-baseline"`` (the classical threshold detector,
        :class:`dicom_node.pipelines.ich_baseline.IchBaselinePipeline`) or
        ``"cta"`` (vessels and large-vessel occlusion on CT angiography,
        :class:`dicom_node.pipelines.cta.CtaLvoPipeline`).
    ich_model_dir : Path or None
        Model package of ``"ich"``; None uses the newest shipped package.

    Returns
    -------
    Pipeline
        A pipeline with default parameters.

    Raises
    ------
    ConfigurationError
        If ``name`` is not a known pipeline.
    ModelPackageError
        If the ``"ich"`` model package is missing or fails its sha256 check.
    """
    entry = REGISTRY.get(name)
    if entry is None:
        raise ConfigurationError(
            f"unknown pipeline {name!r}; known pipelines: {', '.join(PIPELINE_NAMES)}"
        )
    module_name, _, class_name = entry.target.partition(":")
    pipeline_class = getattr(import_module(module_name), class_name)
    if entry.takes_model_dir:
        return pipeline_class(ich_model_dir)
    return pipeline_class()


__all__ = ["PIPELINE_NAMES", "REGISTRY", "Pipeline", "PipelineEntry", "get_pipeline"]
