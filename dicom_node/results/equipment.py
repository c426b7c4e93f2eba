"""Who made a result object: the node (General Equipment) and the algorithm.

IHE Radiology AI Results (AIR) asks every AI result to say which equipment
and which algorithm produced it. The node itself is the General Equipment of
each object it creates (Manufacturer, Manufacturer's Model Name, Software
Versions, Device Serial Number). The algorithm that produced the findings is
added as an item of the Contributing Equipment Sequence with purpose of
reference (109102, DCM, "Processing Equipment"), next to the items highdicom
adds for the acquisition equipment of the source images and for itself; it is
also named in the Algorithm Identification Sequence of every SEG segment and
in TID 4019 Algorithm Identification of every SR measurement.

References
----------
PS3.3 C.7.5.1 General Equipment Module; PS3.3 C.12.1 SOP Common Module
(Contributing Equipment Sequence); PS3.3 Table 10-19 Algorithm Identification
Macro; PS3.16 CID 7005, CID 7162, TID 4019; IHE Radiology Technical Framework
Supplement AI Results (AIR).
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from typing import TypedDict

import highdicom as hd
from pydicom.uid import generate_uid

from dicom_node import __version__
from dicom_node.errors import ResultBuildError
from dicom_node.pipelines.base import AlgorithmIdentity
from dicom_node.results import codes
from dicom_node.results.source import is_valid_uid

logger = logging.getLogger(__name__)

_LO_MAX_CHARS = 64


def _check_lo(keyword: str, value: str) -> None:
    """Raise ResultBuildError unless ``value`` is a valid LO value (PS3.5 6.2)."""
    if not isinstance(value, str) or not value.strip():
        raise ResultBuildError(f"{keyword} must be a non-empty string")
    if len(value) > _LO_MAX_CHARS:
        raise ResultBuildError(f"{keyword} is longer than {_LO_MAX_CHARS} characters (LO)")
    if "\\" in value or any(ord(c) < 0x20 for c in value):
        raise ResultBuildError(f"{keyword} contains a backslash or a control character")


class GeneralEquipmentKwargs(TypedDict):
    """highdicom's General Equipment Module keyword arguments (PS3.3 C.7.5.1)."""

    manufacturer: str
    manufacturer_model_name: str
    software_versions: str
    device_serial_number: str
    institution_name: str | None
    institutional_department_name: str | None


@dataclass(frozen=True)
class EquipmentIdentity:
    """The node as the equipment that creates result objects.

    Parameters
    ----------
    manufacturer : str
        Manufacturer (0008,0070) of every object the node creates.
    manufacturer_model_name : str
        Manufacturer's Model Name (0008,1090).
    software_versions : str
        Software Versions (0018,1020); the dicom-node version.
    device_serial_number : str
        Device Serial Number (0018,1000); the node's AE title is a good,
        site-unique choice.
    institution_name : str or None
        Institution Name (0008,0080) of the site running the node.
    institutional_department_name : str or None
        Institutional Department Name (0008,1040); written only together with
        ``institution_name``.
    device_uid : str or None
        Device Observer UID used in the SR observation context (TID 1004).
        When None a UID is derived deterministically from manufacturer, model
        name and serial number, so that it is stable across restarts.

    Raises
    ------
    dicom_node.errors.ResultBuildError
        If a value is not a valid LO value (empty, over 64 characters,
        backslash or control characters) or ``device_uid`` is not a valid UID.

    References
    ----------
    PS3.3 C.7.5.1 General Equipment Module; PS3.16 TID 1004.
    """

    manufacturer: str = "dicom-node project"
    manufacturer_model_name: str = "dicom-node"
    software_versions: str = __version__
    device_serial_number: str = "DICOM-NODE"
    institution_name: str | None = None
    institutional_department_name: str | None = None
    device_uid: str | None = None

    def __post_init__(self) -> None:
        _check_lo("Manufacturer", self.manufacturer)
        _check_lo("ManufacturerModelName", self.manufacturer_model_name)
        _check_lo("SoftwareVersions", self.software_versions)
        _check_lo("DeviceSerialNumber", self.device_serial_number)
        if self.institution_name is not None:
            _check_lo("InstitutionName", self.institution_name)
        if self.institutional_department_name is not None:
            _check_lo("InstitutionalDepartmentName", self.institutional_department_name)
        if self.device_uid is not None and not is_valid_uid(self.device_uid):
            raise ResultBuildError(f"device_uid {self.device_uid!r} is not a valid UID")

    def general_equipment_kwargs(self) -> GeneralEquipmentKwargs:
        """Keyword arguments of highdicom's SOP class constructors for the General Equipment Module.

        Returns
        -------
        dict
            ``manufacturer``, ``manufacturer_model_name``, ``software_versions``,
            ``device_serial_number``, ``institution_name`` and
            ``institutional_department_name``.

        References
        ----------
        DICOM PS3.3 C.7.5.1 General Equipment Module.
        """
        return {
            "manufacturer": self.manufacturer,
            "manufacturer_model_name": self.manufacturer_model_name,
            "software_versions": self.software_versions,
            "device_serial_number": self.device_serial_number,
            "institution_name": self.institution_name,
            "institutional_department_name": self.institutional_department_name,
        }

    @property
    def device_observer_uid(self) -> str:
        """str: The Device Observer UID (explicit, or derived and stable)."""
        if self.device_uid is not None:
            return self.device_uid
        return str(
            generate_uid(
                entropy_srcs=[
                    self.manufacturer,
                    self.manufacturer_model_name,
                    self.device_serial_number,
                ]
            )
        )


def _check_algorithm(algorithm: AlgorithmIdentity) -> None:
    """Raise ResultBuildError unless name and version are valid LO values."""
    _check_lo("AlgorithmName", algorithm.name)
    _check_lo("AlgorithmVersion", algorithm.version)


def contributing_equipment_for_algorithm(
    equipment: EquipmentIdentity,
    algorithm: AlgorithmIdentity,
    *,
    contribution_datetime: datetime.datetime | None = None,
) -> hd.ContributingEquipment:
    """Build the Contributing Equipment Sequence item describing the algorithm.

    The item names the algorithm as processing equipment: Manufacturer is the
    node's manufacturer, Manufacturer's Model Name the algorithm name,
    Software Versions the algorithm version, Device Serial Number the node's.

    Parameters
    ----------
    equipment : EquipmentIdentity
        The node creating the object.
    algorithm : dicom_node.pipelines.base.AlgorithmIdentity
        The algorithm that produced the findings.
    contribution_datetime : datetime.datetime or None
        Timezone-aware time of the contribution; now (UTC) when None.

    Returns
    -------
    highdicom.ContributingEquipment
        One item for the Contributing Equipment Sequence (0018,A001), with
        Purpose of Reference (109102, DCM, "Processing Equipment").

    Raises
    ------
    dicom_node.errors.ResultBuildError
        If the algorithm name or version is not a valid LO value, the family
        is unknown, or ``contribution_datetime`` is naive.

    References
    ----------
    PS3.3 C.12.1 SOP Common Module, Contributing Equipment Sequence;
    PS3.16 CID 7005; IHE AIR.
    """
    _check_algorithm(algorithm)
    family = codes.algorithm_family_code(algorithm.family)
    if contribution_datetime is None:
        contribution_datetime = datetime.datetime.now(datetime.UTC)
    elif contribution_datetime.tzinfo is None:
        raise ResultBuildError("contribution_datetime must be timezone-aware")
    description = (
        f"Algorithm {algorithm.name} version {algorithm.version} "
        f"({family.meaning}) run by {equipment.manufacturer_model_name} "
        f"{equipment.software_versions}; not for diagnostic use"
    )
    try:
        return hd.ContributingEquipment(
            manufacturer=equipment.manufacturer,
            purpose_of_reference=codes.PROCESSING_EQUIPMENT,
            manufacturer_model_name=algorithm.name,
            software_versions=algorithm.version,
            device_serial_number=equipment.device_serial_number,
            institution_name=equipment.institution_name,
            institutional_department_name=(
                equipment.institutional_department_name if equipment.institution_name else None
            ),
            contribution_datetime=contribution_datetime,
            contribution_description=description,
        )
    except (TypeError, ValueError) as err:
        raise ResultBuildError(f"cannot build Contributing Equipment item: {err}") from err


def algorithm_identification_sequence(
    algorithm: AlgorithmIdentity, equipment: EquipmentIdentity
) -> hd.AlgorithmIdentificationSequence:
    """Build the Algorithm Identification Sequence of a SEG segment.

    Parameters
    ----------
    algorithm : dicom_node.pipelines.base.AlgorithmIdentity
        Algorithm name, version and family key.
    equipment : EquipmentIdentity
        The node; its manufacturer becomes the Algorithm Source.

    Returns
    -------
    highdicom.AlgorithmIdentificationSequence
        Segment Algorithm Identification Sequence (0062,0007) content.

    Raises
    ------
    dicom_node.errors.ResultBuildError
        If name or version is not a valid LO value or the family is unknown.

    References
    ----------
    PS3.3 Table 10-19 Algorithm Identification Macro; PS3.16 CID 7162.
    """
    _check_algorithm(algorithm)
    return hd.AlgorithmIdentificationSequence(
        name=algorithm.name,
        family=codes.algorithm_family_code(algorithm.family),
        version=algorithm.version,
        source=equipment.manufacturer,
    )


def algorithm_identification(
    algorithm: AlgorithmIdentity, equipment: EquipmentIdentity
) -> hd.sr.AlgorithmIdentification:
    """Build TID 4019 Algorithm Identification for SR measurements.

    Parameters
    ----------
    algorithm : dicom_node.pipelines.base.AlgorithmIdentity
        Algorithm name, version and family key.
    equipment : EquipmentIdentity
        The node; its manufacturer becomes the Algorithm Manufacturer.

    Returns
    -------
    highdicom.sr.AlgorithmIdentification
        Content items Algorithm Name, Version, Manufacturer and Family.

    Raises
    ------
    dicom_node.errors.ResultBuildError
        If name or version is not a valid LO value or the family is unknown.

    References
    ----------
    PS3.16 TID 4019 Algorithm Identification, CID 7162.
    """
    _check_algorithm(algorithm)
    return hd.sr.AlgorithmIdentification(
        name=algorithm.name,
        version=algorithm.version,
        family=codes.algorithm_family_code(algorithm.family),
        manufacturer=equipment.manufacturer,
    )
