"""Dataset readers on tiny fixtures written in each dataset's published layout."""

from __future__ import annotations

import csv
import random
import shutil
import warnings
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from dicom_node.errors import SeriesLoadError
from dicom_node.imaging.ich_input import ICH_SUBTYPES
from dicom_node.training.datasets import (
    UNKNOWN_SUBTYPE_LABEL,
    DatasetError,
    LabelledSlices,
    LabelledVolume,
    open_dataset,
    read_bhsd,
    read_ich_renders,
    read_physionet_ct_ich,
    read_rsna_ich,
)

# RSNA files use "ID_<hex>" where DICOM expects UIDs; pydicom warns about each one.
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI")

EDH, SDH, SAH, IPH, IVH = range(1, 6)  # our label order, checked below against ICH_SUBTYPES

# ------------------------------------------------------------------ NIfTI fixtures
#: NIfTI voxel grid (i, j, k) of the fixtures: 16 x 14 x 8.
NI, NJ, NK = 16, 14, 8
#: i toward left (-x in RAS), j toward anterior, k toward superior.
AFFINE_A = np.array(
    [[-0.5, 0, 0, 40.0], [0, 0.6, 0, -30.0], [0, 0, 5.0, -10.0], [0, 0, 0, 1]], dtype=float
)
#: i toward left, j toward posterior, k toward inferior (slices stored head first).
AFFINE_B = np.array(
    [[-0.5, 0, 0, 40.0], [0, -0.6, 0, 30.0], [0, 0, -5.0, 60.0], [0, 0, 0, 1]], dtype=float
)
MARKER_IJK = (3, 2, 5)
MARKER_HU = 1234


def expected_src(affine: np.ndarray, i: int, j: int, k: int) -> tuple[int, int, int]:
    """(slice, row, column) where NIfTI voxel (i, j, k) must land, worked out by hand."""
    column = i  # i runs toward left in both affines: columns run toward left
    row = NJ - 1 - j if affine[1, 1] > 0 else j  # rows run toward posterior
    slice_ = k if affine[2, 2] > 0 else NK - 1 - k  # slices ascend toward superior
    return slice_, row, column


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, dtype=np.uint16) -> None:
    image = nib.Nifti1Image(data, affine)
    image.header.set_data_dtype(dtype)
    nib.save(image, str(path))


def head_hu() -> np.ndarray:
    """int32 (NI, NJ, NK): air, a 40 HU head, a 1234 HU marker voxel."""
    hu = np.full((NI, NJ, NK), -1024, dtype=np.int32)
    hu[2:14, 1:13, :] = 40
    hu[MARKER_IJK] = MARKER_HU
    return hu


#: PhysioNet slice flags per 0-based k: the CSV columns set to 1.
PHYSIONET_FLAGS = {
    2: ("Subdural",),
    3: ("Subdural", "Intraparenchymal"),
    6: ("Epidural",),
}
#: Slices (0-based k) whose mask has hemorrhage voxels.
PHYSIONET_MASKED = (2, 3, 4)
PHYSIONET_COLUMNS = [
    "PatientNumber",
    "SliceNumber",
    "Intraventricular",
    "Intraparenchymal",
    "Subarachnoid",
    "Epidural",
    "Subdural",
    "No_Hemorrhage",
    "Fracture_Yes_No",
]


def make_physionet(root: Path) -> Path:
    """PhysioNet ct-ich layout: ct_scans/NNN.nii, masks/NNN.nii, the per-slice CSV."""
    (root / "ct_scans").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = []
    for patient, affine in ((49, AFFINE_A), (50, AFFINE_B)):
        write_nifti(root / "ct_scans" / f"{patient:03d}.nii", head_hu(), affine)
        mask = np.zeros((NI, NJ, NK), dtype=np.uint8)
        for k in PHYSIONET_MASKED:
            mask[5:8, 4:7, k] = 255  # the release stores 0/255
        write_nifti(root / "masks" / f"{patient:03d}.nii", mask, affine, dtype=np.uint8)
        for k in range(NK):
            flags = PHYSIONET_FLAGS.get(k, ())
            row = {c: 0 for c in PHYSIONET_COLUMNS}
            row.update(PatientNumber=patient, SliceNumber=k + 1, No_Hemorrhage=int(not flags))
            row.update({c: 1 for c in flags})
            rows.append(row)
    with (root / "hemorrhage_diagnosis_raw_ct.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=PHYSIONET_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        handle.write(",,,,,,,,\n")  # the release ends with empty rows
    return root


#: BHSD label values (1 EDH, 2 IPH, 3 IVH, 4 SAH, 5 SDH) per 0-based k, and ours.
BHSD_SLICE_VALUES = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5}
BHSD_TO_OURS = {1: EDH, 2: IPH, 3: IVH, 4: SAH, 5: SDH}
BHSD_CASES = ("ID_0237f3c9_ID_40015688b9", "ID_029ebbea_ID_563afa0901")


def make_bhsd(root: Path) -> Path:
    """BHSD label_192 layout: images/ and 'ground truths/' with .nii.gz pairs."""
    base = root / "label_192"
    (base / "images").mkdir(parents=True)
    (base / "ground truths").mkdir()
    for name, affine in zip(BHSD_CASES, (AFFINE_A, AFFINE_B), strict=True):
        write_nifti(base / "images" / f"{name}.nii.gz", head_hu(), affine)
        labels = np.zeros((NI, NJ, NK), dtype=np.uint8)
        for k, value in BHSD_SLICE_VALUES.items():
            labels[6:9, 5:7, k] = value
        write_nifti(base / "ground truths" / f"{name}.nii.gz", labels, affine, dtype=np.uint8)
    return base


# ------------------------------------------------------------------ RSNA fixtures
RSNA_CSV_SUBTYPES = (
    "epidural",
    "intraparenchymal",
    "intraventricular",
    "subarachnoid",
    "subdural",
    "any",
)
ROWS, COLUMNS = 6, 7


def random_id(rng: random.Random) -> str:
    return "ID_" + "".join(rng.choice("0123456789abcdef") for _ in range(9))


def write_rsna_dicom(
    path: Path,
    *,
    sop: str,
    study: str,
    series: str,
    z_mm: float,
    hu: np.ndarray,
    wrapped: bool = False,
) -> None:
    """One RSNA-style CT slice: the 22 attributes of the release, no Frame of Reference UID."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPInstanceUID = sop
    ds.Modality = "CT"
    ds.PatientID = "ID_" + sop[3:]  # a fixture value, never logged
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.StudyID = ""
    ds.ImagePositionPatient = [-1.5, -1.25, z_mm]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.5, 0.45]
    ds.WindowCenter = 40
    ds.WindowWidth = 80
    ds.RescaleSlope = 1
    if wrapped:  # the release's quirk: 12-bit two's complement read as unsigned, intercept ~0
        stored = np.mod(hu.astype(np.int32), 4096).astype(np.uint16)
        ds.RescaleIntercept = 0
    else:
        stored = (hu.astype(np.int32) + 1024).astype(np.uint16)
        ds.RescaleIntercept = -1024
    ds.set_pixel_data(stored, "MONOCHROME2", 12, generate_instance_uid=False)
    ds.save_as(path, enforce_file_format=True)


def make_rsna(root: Path, seed: int = 3) -> dict:
    """RSNA stage 2 layout: stage_2_train/ID_x.dcm and stage_2_train.csv (shuffled)."""
    rng = random.Random(seed)
    image_dir = root / "stage_2_train"
    image_dir.mkdir(parents=True)
    truth: dict = {"series": {}, "labels": {}}
    rows = []
    for series_index, n_slices in enumerate((5, 4)):
        study, series = random_id(rng), random_id(rng)
        ids = [random_id(rng) for _ in range(n_slices)]  # random names: name order != z order
        zs = [5.0 * k for k in range(n_slices)]
        rng.shuffle(zs)
        by_z = []
        for image_id, z in zip(ids, zs, strict=True):
            k = int(z / 5.0)
            hu = np.full((ROWS, COLUMNS), -1000, dtype=np.int16)
            hu[1:5, 1:6] = 10 * k + 100 * series_index  # slice k of series s holds 10k + 100s HU
            wrapped = series_index == 1 and k == 2
            write_rsna_dicom(
                image_dir / f"{image_id}.dcm",
                sop=image_id,
                study=study,
                series=series,
                z_mm=z,
                hu=hu,
                wrapped=wrapped,
            )
            flags = dict.fromkeys(RSNA_CSV_SUBTYPES, 0)
            if series_index == 0 and k == 2:
                flags.update(subdural=1, any=1)
            if series_index == 0 and k == 3:
                flags.update(intraparenchymal=1, intraventricular=1, any=1)
            if series_index == 1 and k == 0:
                flags.update(epidural=1, subarachnoid=1, any=1)
            truth["labels"][image_id] = flags
            rows += [(f"{image_id}_{s}", v) for s, v in flags.items()]
            by_z.append((z, image_id))
        truth["series"][series] = [image_id for _, image_id in sorted(by_z)]
    # A test-set slice lying in the folder without labels: it must be ignored.
    write_rsna_dicom(
        image_dir / "ID_ffffffff0.dcm",
        sop="ID_ffffffff0",
        study="ID_eeee",
        series="ID_dddd",
        z_mm=0.0,
        hu=np.zeros((ROWS, COLUMNS), dtype=np.int16),
    )
    rng.shuffle(rows)
    rows.append(rows[0])  # the release repeats some rows verbatim
    with (root / "stage_2_train.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ID", "Label"])
        writer.writerows(rows)
    return truth


# ----------------------------------------------------------------- renders fixture
RENDER_CASES = {  # image -> (folder, CSV flags)
    "ID_00a1b2c3d": ("epidural", {"epidural": 1, "any": 1}),
    "ID_00a1b2c3e": ("multi", {"subdural": 1, "intraventricular": 1, "any": 1}),
    "ID_00a1b2c3f": ("normal", {}),
    "ID_00a1b2c40": ("normal", {}),  # listed in flagged.txt
}
RENDER_CSV_COLUMNS = [
    "Image",
    "any",
    "epidural",
    "intraparenchymal",
    "intraventricular",
    "subarachnoid",
    "subdural",
]


def make_renders(root: Path) -> Path:
    """renders/<folder>/<window>/ID_x.jpg, hemorrhage-labels.csv, flagged.txt."""
    rows = []
    for index, (image_id, (folder, flags)) in enumerate(RENDER_CASES.items()):
        for window, value in (("brain_window", 60 + index), ("subdural_window", 150 + index)):
            folder_path = root / "renders" / folder / window
            folder_path.mkdir(parents=True, exist_ok=True)
            image = np.full((10, 12, 3), value, dtype=np.uint8)  # 3-channel, gray content
            assert cv2.imwrite(str(folder_path / f"{image_id}.jpg"), image)
        rows.append({"Image": image_id, **dict.fromkeys(RENDER_CSV_COLUMNS[1:], 0), **flags})
    rows.append({"Image": "ID_999999999", **dict.fromkeys(RENDER_CSV_COLUMNS[1:], 0)})
    with (root / "hemorrhage-labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=RENDER_CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    (root / "flagged.txt").write_text("ID_00a1b2c40.jpg\n")
    return root


# ============================================================================ tests
def test_label_constants_follow_ich_subtypes():
    names = ("epidural", "subdural", "subarachnoid", "intraparenchymal", "intraventricular")
    assert [s.split()[0] for s in ICH_SUBTYPES] == list(names)
    assert (EDH, SDH, SAH, IPH, IVH) == (1, 2, 3, 4, 5)


def _flags(*labels: int) -> np.ndarray:
    row = np.zeros(5, dtype=bool)
    row[[label - 1 for label in labels]] = True
    return row


# ------------------------------------------------------------------------ PhysioNet
def test_physionet_shapes_hu_geometry_and_orientation(tmp_path):
    root = make_physionet(tmp_path)
    assert nib.load(str(root / "ct_scans" / "049.nii")).dataobj.inter == -1024  # stored != HU
    cases = list(read_physionet_ct_ich(root))
    assert [c.case_id for c in cases] == ["049", "050"]
    for case, affine in zip(cases, (AFFINE_A, AFFINE_B), strict=True):
        assert isinstance(case, LabelledVolume) and case.source == "physionet-ct-ich"
        assert case.hu.shape == case.labels.shape == (NK, NJ, NI)
        assert case.hu.dtype == np.float32 and case.labels.dtype == np.uint8
        assert case.pixel_spacing_mm == pytest.approx((0.6, 0.5))
        assert case.slice_spacing_mm == pytest.approx(5.0)
        s, r, c = expected_src(affine, *MARKER_IJK)
        assert case.hu[s, r, c] == MARKER_HU
        assert np.count_nonzero(case.hu == MARKER_HU) == 1
        assert set(np.unique(case.hu)) == {-1024.0, 40.0, float(MARKER_HU)}
        ras = affine @ np.array([*MARKER_IJK, 1.0])
        lps = case.affine @ np.array([s, r, c, 1.0])
        np.testing.assert_allclose(lps[:3], [-ras[0], -ras[1], ras[2]], atol=1e-6)
        # the node's convention: columns toward L (+x), rows toward P (+y), slices up (+z)
        assert case.affine[0, 2] > 0 and case.affine[1, 1] > 0 and case.affine[2, 0] > 0


def test_physionet_masks_take_the_single_flagged_subtype_else_unknown(tmp_path):
    cases = list(read_physionet_ct_ich(make_physionet(tmp_path)))
    for case, affine in zip(cases, (AFFINE_A, AFFINE_B), strict=True):
        for k in range(NK):
            s = expected_src(affine, 0, 0, k)[0]
            values = set(np.unique(case.labels[s]).tolist())
            if k == 2:
                assert values == {0, SDH}
            elif k in (3, 4):  # two subtypes flagged / none flagged: subtype unknown
                assert values == {0, UNKNOWN_SUBTYPE_LABEL}
            else:
                assert values == {0}
            expected = {2: _flags(SDH), 3: _flags(SDH, IPH), 6: _flags(EDH)}.get(k, _flags())
            np.testing.assert_array_equal(case.slice_labels[s], expected)
        assert np.count_nonzero(case.labels) == 3 * 3 * 3
        assert case.any_hemorrhage.sum() == 4  # slices k = 2, 3, 4 (voxels) and 6 (flag)


def test_physionet_missing_csv_is_named(tmp_path):
    root = make_physionet(tmp_path)
    (root / "hemorrhage_diagnosis_raw_ct.csv").unlink()
    with pytest.raises(DatasetError, match=r"hemorrhage_diagnosis_raw_ct\.csv.*label CSV exists"):
        list(read_physionet_ct_ich(root))


def test_physionet_csv_row_for_a_missing_scan_is_named(tmp_path):
    root = make_physionet(tmp_path)
    with (root / "hemorrhage_diagnosis_raw_ct.csv").open("a", newline="") as handle:
        handle.write("51,1,0,0,0,0,0,1,0\n")
    with pytest.raises(DatasetError, match=r"every CSV patient has a scan.*051\.nii"):
        list(read_physionet_ct_ich(root))


def test_physionet_mask_with_another_shape_is_named(tmp_path):
    root = make_physionet(tmp_path)
    write_nifti(root / "masks" / "050.nii", np.zeros((NI, NJ, NK - 1), np.uint8), AFFINE_B)
    reader = read_physionet_ct_ich(root)
    assert next(reader).case_id == "049"
    with pytest.raises(DatasetError, match=r"masks/050\.nii.*shape of its scan.*\(16, 14, 7\)"):
        next(reader)


def test_physionet_slice_number_beyond_the_scan_is_named(tmp_path):
    root = make_physionet(tmp_path)
    with (root / "hemorrhage_diagnosis_raw_ct.csv").open("a", newline="") as handle:
        handle.write("49,9,0,0,0,0,0,1,0\n")
    with pytest.raises(DatasetError, match=r"SliceNumber within 1\.\.8.*slice 9"):
        list(read_physionet_ct_ich(root))


def test_physionet_flag_that_is_not_0_or_1_is_named(tmp_path):
    root = make_physionet(tmp_path)
    with (root / "hemorrhage_diagnosis_raw_ct.csv").open("a", newline="") as handle:
        handle.write("49,9,0,0,0,2,0,1,0\n")
    with pytest.raises(DatasetError, match=r"line \d+: rule 'Epidural is 0 or 1' broken: '2'"):
        list(read_physionet_ct_ich(root))


# ----------------------------------------------------------------------------- BHSD
def test_bhsd_remaps_labels_to_our_order_and_keeps_geometry(tmp_path):
    make_bhsd(tmp_path)
    cases = list(read_bhsd(tmp_path))  # the folder holding label_192/ is accepted
    assert [c.case_id for c in cases] == list(BHSD_CASES)
    for case, affine in zip(cases, (AFFINE_A, AFFINE_B), strict=True):
        assert case.source == "bhsd" and case.hu.shape == case.labels.shape == (NK, NJ, NI)
        s, r, c = expected_src(affine, *MARKER_IJK)
        assert case.hu[s, r, c] == MARKER_HU
        for k in range(NK):
            s = expected_src(affine, 0, 0, k)[0]
            ours = BHSD_TO_OURS.get(BHSD_SLICE_VALUES.get(k, 0), 0)
            assert set(np.unique(case.labels[s]).tolist()) == ({0, ours} if ours else {0})
            np.testing.assert_array_equal(case.slice_labels[s], _flags(ours) if ours else _flags())
        # a labelled voxel sits at the same patient position as in the source file
        i, j, k = 7, 5, 1
        src = expected_src(affine, i, j, k)
        assert case.labels[src] == EDH
        ras = affine @ np.array([i, j, k, 1.0])
        np.testing.assert_allclose((case.affine @ np.array([*src, 1.0]))[:3], ras[:3] * [-1, -1, 1])


def test_bhsd_unknown_label_value_is_named(tmp_path):
    base = make_bhsd(tmp_path)
    labels = np.zeros((NI, NJ, NK), dtype=np.uint8)
    labels[1, 1, 1] = 7
    write_nifti(base / "ground truths" / f"{BHSD_CASES[1]}.nii.gz", labels, AFFINE_B, np.uint8)
    with pytest.raises(DatasetError, match=rf"{BHSD_CASES[1]}\.nii\.gz.*values are 0-5.*found 7"):
        list(read_bhsd(base))


def test_bhsd_image_without_labels_and_shape_mismatch_are_named(tmp_path):
    base = make_bhsd(tmp_path)
    (base / "ground truths" / f"{BHSD_CASES[0]}.nii.gz").unlink()
    with pytest.raises(DatasetError, match=r"every image has a label volume.*ground truths"):
        list(read_bhsd(base))
    write_nifti(
        base / "ground truths" / f"{BHSD_CASES[0]}.nii.gz",
        np.zeros((NI, NJ + 1, NK), np.uint8),
        AFFINE_A,
        np.uint8,
    )
    with pytest.raises(DatasetError, match=r"shape of its scan.*\(16, 15, 8\)"):
        list(read_bhsd(base))


def test_bhsd_nnunet_layout(tmp_path):
    base = make_bhsd(tmp_path / "src")
    shutil.copytree(base / "images", tmp_path / "nn" / "imagesTr")
    shutil.copytree(base / "ground truths", tmp_path / "nn" / "labelsTr")
    assert [c.case_id for c in read_bhsd(tmp_path / "nn")] == list(BHSD_CASES)


# ----------------------------------------------------------------------------- RSNA
def test_rsna_groups_series_orders_slices_and_maps_labels(tmp_path):
    truth = make_rsna(tmp_path)
    cases = list(read_rsna_ich(tmp_path))
    assert [c.case_id for c in cases] == sorted(truth["series"])  # the unlabelled one ignored
    order = ("epidural", "subdural", "subarachnoid", "intraparenchymal", "intraventricular")
    for case in cases:
        assert isinstance(case, LabelledSlices) and case.source == "rsna-ich"
        series_index = list(truth["series"]).index(case.case_id)
        assert case.slice_ids == tuple(truth["series"][case.case_id])
        assert case.hu.shape == (len(case.slice_ids), ROWS, COLUMNS)
        np.testing.assert_allclose(
            case.volume.image_positions_mm[:, 2], 5.0 * np.arange(len(case.slice_ids))
        )
        for k, image_id in enumerate(case.slice_ids):
            assert case.hu[k, 2, 3] == 10 * k + 100 * series_index  # rescale applied, z order
            assert case.hu[k, 0, 0] == -1000  # also on the slice with the 12-bit wrap
            flags = truth["labels"][image_id]
            np.testing.assert_array_equal(case.slice_labels[k], [bool(flags[s]) for s in order])
            assert case.any_hemorrhage[k] == bool(flags["any"])
        assert case.volume.pixel_spacing_mm == (0.5, 0.45)
        assert case.volume.frame_of_reference_uid == case.case_id  # the release has none
    first = cases[[c.case_id for c in cases].index(list(truth["series"])[0])]
    np.testing.assert_array_equal(first.slice_labels[2], _flags(SDH))
    np.testing.assert_array_equal(first.slice_labels[3], _flags(IPH, IVH))


def test_rsna_csv_row_for_a_missing_image_is_named(tmp_path):
    truth = make_rsna(tmp_path)
    missing = next(iter(truth["labels"]))
    (tmp_path / "stage_2_train" / f"{missing}.dcm").unlink()
    with pytest.raises(DatasetError, match=rf"{missing}\.dcm.*every CSV image has a DICOM file"):
        list(read_rsna_ich(tmp_path))


def test_rsna_missing_csv_is_named(tmp_path):
    make_rsna(tmp_path)
    with pytest.raises(DatasetError, match=r"stage_1_train\.csv.*label CSV exists"):
        list(read_rsna_ich(tmp_path, csv_name="stage_1_train.csv"))


def test_rsna_contradicting_rows_are_named(tmp_path):
    truth = make_rsna(tmp_path)
    image_id = next(iter(truth["labels"]))
    value = truth["labels"][image_id]["subdural"]
    with (tmp_path / "stage_2_train.csv").open("a", newline="") as handle:
        handle.write(f"{image_id}_subdural,{1 - value}\n")
    with pytest.raises(DatasetError, match=rf"one label per image and subtype.*{image_id}"):
        list(read_rsna_ich(tmp_path))


def test_rsna_series_that_breaks_a_geometry_rule(tmp_path):
    truth = make_rsna(tmp_path)
    series = sorted(truth["series"])[0]
    a, b = truth["series"][series][:2]
    path = tmp_path / "stage_2_train" / f"{b}.dcm"
    ds = pydicom.dcmread(path)
    ds.ImagePositionPatient = pydicom.dcmread(
        tmp_path / "stage_2_train" / f"{a}.dcm"
    ).ImagePositionPatient
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(path)
    with pytest.raises(DatasetError, match="no two slices at the same position") as info:
        list(read_rsna_ich(tmp_path))
    assert isinstance(info.value.__cause__, SeriesLoadError)
    assert [c.case_id for c in read_rsna_ich(tmp_path, skip_unloadable=True)] == [
        s for s in sorted(truth["series"]) if s != series
    ]


# -------------------------------------------------------------------------- renders
def test_renders_images_per_window_and_labels(tmp_path):
    root = make_renders(tmp_path)
    cases = list(read_ich_renders(root, window=("brain_window", "subdural_window")))
    assert [c.case_id for c in cases] == ["ID_00a1b2c3d", "ID_00a1b2c3e", "ID_00a1b2c3f"]
    for index, case in enumerate(cases):
        assert case.source == "rsna-ich-renders" and case.hu is None and case.volume is None
        assert set(case.windowed) == {"brain_window", "subdural_window"}
        brain = case.windowed["brain_window"]
        assert brain.shape == (1, 10, 12) and brain.dtype == np.uint8
        assert np.abs(brain.astype(int) - (60 + index)).max() <= 2  # JPEG, grayscale read
        assert np.abs(case.windowed["subdural_window"].astype(int) - (150 + index)).max() <= 2
    np.testing.assert_array_equal(cases[0].slice_labels, [_flags(EDH)])
    np.testing.assert_array_equal(cases[1].slice_labels, [_flags(SDH, IVH)])
    np.testing.assert_array_equal(cases[2].slice_labels, [_flags()])
    assert [bool(c.any_hemorrhage[0]) for c in cases] == [True, True, False]


def test_renders_errors_are_named(tmp_path):
    root = make_renders(tmp_path)
    with pytest.raises(DatasetError, match="window is one of"):
        list(read_ich_renders(root, window="bone_window"))
    (root / "renders" / "multi" / "subdural_window" / "ID_00a1b2c3e.jpg").unlink()
    with pytest.raises(DatasetError, match=r"subdural_window/ID_00a1b2c3e\.jpg.*every requested"):
        list(read_ich_renders(root, window=("brain_window", "subdural_window")))
    extra = root / "renders" / "normal" / "brain_window" / "ID_0badc0de1.jpg"
    shutil.copy(root / "renders" / "normal" / "brain_window" / "ID_00a1b2c3f.jpg", extra)
    with pytest.raises(DatasetError, match=r"ID_0badc0de1\.jpg.*every image has a row"):
        list(read_ich_renders(root))


# ------------------------------------------------------------------------ dispatcher
def test_open_dataset_dispatches_and_rejects_unknown_kinds(tmp_path):
    base = make_bhsd(tmp_path)
    assert [c.case_id for c in open_dataset(f"bhsd:{base}")] == list(BHSD_CASES)
    with pytest.raises(DatasetError, match="KIND:PATH"):
        open_dataset(f"kaggle:{base}")
    with pytest.raises(DatasetError, match="root is a folder"):
        open_dataset(f"rsna:{tmp_path / 'nowhere'}")
