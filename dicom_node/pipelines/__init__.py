"""Clinical pipelines: a :class:`~dicom_node.series.volume.CTVolume` in, findings out.

:func:`get_pipeline` maps the pipeline names used in the selection rules to
pipeline objects. Pipelines are built on demand; nothing is cached at module
level, and a pipeline whose module imports a deep-learning framework is only
imported when asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from dicom_node.errors import ConfigurationError
from dicom_node.pipelines.base import AlgorithmIdentity, PipelineResult
from dicom_node.series.volume import CTVolume

#: Names accepted by :func:`get_pipeline`.
PIPELINE_NAMES: tuple[str, ...] = ("ich", "ich-baseline", "cta")


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
    if name == "ich":
        from dicom_node.pipelines.ich import IchPipeline

        return IchPipeline(ich_model_dir)
    if name == "ich-baseline":
        from dicom_node.pipelines.ich_baseline import IchBaselinePipeline

        return IchBaselinePipeline()
    if name == "cta":
        from dicom_node.pipelines.cta import CtaLvoPipeline

        return CtaLvoPipeline()
    raise ConfigurationError(
        f"unknown pipeline {name!r}; known pipelines: {', '.join(PIPELINE_NAMES)}"
    )


__all__ = ["PIPELINE_NAMES", "Pipeline", "get_pipeline"]
