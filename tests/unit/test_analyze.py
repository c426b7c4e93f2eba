"""``dicom-node analyze``: one series from disk through gates, pipeline and builders.

Runs the real command (``python -m dicom_node.cli``) on the real GE head CT,
on NIfTI files written from it, on a one-slice folder and on folders that
are not one readable series; every object it writes is checked again here
with dciodvfy and read back with highdicom.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from dicom_node.analyze import read_input
from dicom_node.results.validate import validate_result_file
from dicom_node.series.volume import CTVolume, load_ct_volume, read_datasets


def run_analyze(*args: str, cwd: Path, env: dict[str, str] | None = None):
    """Run ``dicom-node analyze`` in a fresh interpreter; return the completed process."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DICOM_NODE_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "dicom_node.cli", "analyze", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env=environment,
        check=False,
    )


@pytest.fixture(scope="module")
def ge_volume(head_ct_dir: Path) -> CTVolume:
    return load_ct_volume(read_datasets(sorted(head_ct_dir.glob("*.dcm"))))


def _referenced_sop_uids(seg: hd.seg.Segmentation) -> list[str]:
    return [
        item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        for item in seg.PerFrameFunctionalGroupsSequence
    ]


def _check_files(report: dict, dciodvfy: str) -> dict[str, list[Path]]:
    """Every file the report names exists and passes dciodvfy here too; paths by kind."""
    by_kind: dict[str, list[Path]] = {}
    for entry in report["files"]:
        path = Path(entry["path"])
        assert path.name == f"{entry['kind']}-{entry['sop_instance_uid']}.dcm"
        assert entry["dciodvfy"]["errors"] == 0
        assert validate_result_file(path, executable=dciodvfy).errors == ()
        by_kind.setdefault(entry["kind"], []).append(path)
    return by_kind


def test_analyze_ge_head_folder_json(head_ct_dir, ge_volume, tmp_path, dciodvfy):
    out = tmp_path / "results"
    done = run_analyze(
        str(head_ct_dir), "--pipeline", "ich-baseline", "--json", "--out", str(out), cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["status"] == "analysed" and report["not_analysable"] is None
    assert report["input"]["kind"] == "dicom" and report["input"]["instances"] == 28
    assert report["input"]["series_instance_uid"] == ge_volume.series_instance_uid
    assert report["frame_of_reference"] == {
        "uid": ge_volume.frame_of_reference_uid,
        "derived": False,
    }
    assert report["algorithm"]["name"] == "ich-baseline"
    (finding,) = report["findings"]
    assert finding["label"] == "intracranial hemorrhage"
    assert set(finding) >= {"present", "volume_ml", "laterality", "probability"}
    assert finding["present"] is False and finding["volume_ml"] == 0.0
    assert report["details"]["intracranial_volume_ml"] > 1000
    assert set(report["timings_s"]) >= {"load", "inference", "build", "write"}
    files = _check_files(report, dciodvfy)
    assert sorted(files) == ["SEG", "SR"]
    assert all(path.parent == out for paths in files.values() for path in paths)
    seg = hd.seg.segread(files["SEG"][0])
    assert sorted(_referenced_sop_uids(seg)) == sorted(ge_volume.sop_instance_uids)
    sr = hd.sr.srread(files["SR"][0])
    assert sr.StudyInstanceUID == ge_volume.study_instance_uid


def _write_nifti_like_dcm2niix(volume: CTVolume, path: Path, *, scaled: bool) -> None:
    """Write a CT volume as NIfTI: i = column, j = row flipped (anterior up), k = slice.

    The affine is the volume's (LPS, mean slice step) turned into RAS. With
    ``scaled`` the voxels are stored as int16 HU + 1024 with scl_inter = -1024.
    """
    slices, rows, _ = volume.shape
    lps = np.eye(4)
    lps[:3, 0] = volume.row_direction * volume.pixel_spacing_mm[1]
    lps[:3, 1] = -volume.column_direction * volume.pixel_spacing_mm[0]  # rows flipped
    lps[:3, 2] = volume.mean_slice_step_mm
    lps[:3, 3] = (
        volume.image_positions_mm[0]
        + (rows - 1) * volume.column_direction * (volume.pixel_spacing_mm[0])
    )
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    data = volume.hu.transpose(2, 1, 0)[:, ::-1, :]  # (i, j, k)
    if scaled:
        image = nib.Nifti1Image(np.rint(data + 1024).astype(np.int16), ras)
        image.header.set_xyzt_units("mm")
        nib.save(image, path)
        header = nib.load(path).header.copy()  # nibabel rewrites scaling on save: patch it
        header["scl_slope"], header["scl_inter"] = 1.0, -1024.0
        with open(path, "r+b") as handle:
            header.write_to(handle)
    else:
        image = nib.Nifti1Image(data.astype(np.float32), ras)
        image.header.set_xyzt_units("mm")
        nib.save(image, path)


def test_nifti_conversion_keeps_voxels_and_geometry(ge_volume, tmp_path):
    path = tmp_path / "head.nii"
    _write_nifti_like_dcm2niix(ge_volume, path, scaled=True)
    stored = nib.load(path)
    assert (stored.dataobj.slope, stored.dataobj.inter) == (1.0, -1024.0)
    assert np.asarray(stored.dataobj.get_unscaled()).max() == ge_volume.hu.max() + 1024
    series = read_input(path)
    assert series.kind == "nifti" and series.conversion["reoriented"] is True
    converted = load_ct_volume(series.datasets)
    assert converted.shape == ge_volume.shape
    assert not converted.frame_of_reference_derived
    assert converted.series_instance_uid != ge_volume.series_instance_uid
    np.testing.assert_allclose(converted.image_orientation, ge_volume.image_orientation, atol=1e-6)
    np.testing.assert_allclose(converted.pixel_spacing_mm, ge_volume.pixel_spacing_mm, rtol=1e-6)
    # Regular steps of the mean step: the first and last slices are where the source's are.
    for index in (0, -1):
        np.testing.assert_allclose(
            converted.image_positions_mm[index], ge_volume.image_positions_mm[index], atol=1e-3
        )
    np.testing.assert_array_equal(converted.hu, ge_volume.hu)  # HU after scl_inter, same voxels


def test_analyze_nifti_references_the_converted_frames(ge_volume, tmp_path, dciodvfy):
    path = tmp_path / "head.nii.gz"
    _write_nifti_like_dcm2niix(ge_volume, path, scaled=False)
    done = run_analyze(
        str(path),
        "--pipeline",
        "ich-baseline",
        "--json",
        "--out",
        str(tmp_path / "out"),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["status"] == "analysed", report["not_analysable"]
    assert report["input"]["kind"] == "nifti" and report["input"]["instances"] == 28
    assert "new Study, Series" in report["input"]["nifti_conversion"]["note"]
    files = _check_files(report, dciodvfy)
    seg = hd.seg.segread(files["SEG"][0])
    assert seg.StudyInstanceUID == report["input"]["study_instance_uid"]
    (series_item,) = seg.ReferencedSeriesSequence
    assert series_item.SeriesInstanceUID == report["input"]["series_instance_uid"]
    referenced = _referenced_sop_uids(seg)
    assert len(set(referenced)) == 28
    assert set(referenced) == {
        i.ReferencedSOPInstanceUID for i in series_item.ReferencedInstanceSequence
    }
    assert seg.FrameOfReferenceUID == report["frame_of_reference"]["uid"]
    # The frames lie where the source's first and last slices lie (the NIfTI has their affine).
    positions = np.array(
        [
            [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
            for item in seg.PerFrameFunctionalGroupsSequence
        ]
    )
    positions = positions[np.argsort(positions @ ge_volume.normal)]
    np.testing.assert_allclose(positions[[0, -1]], ge_volume.image_positions_mm[[0, -1]], atol=1e-3)
    sr = hd.sr.srread(files["SR"][0])
    evidence = {
        i.ReferencedSOPInstanceUID
        for s in sr.CurrentRequestedProcedureEvidenceSequence
        for r in s.ReferencedSeriesSequence
        for i in r.ReferencedSOPSequence
    }
    assert set(referenced) | {seg.SOPInstanceUID} == evidence


@pytest.mark.parametrize(
    ("env", "gate", "reason"),
    [
        ({}, "slice_count", "too few slices: 1, at least 10 needed"),
        (
            {"DICOM_NODE_QUALITY__ENABLED": "false"},
            "volume",
            "rule 'at least 3 slices' broken: series has 1",
        ),
    ],
)
def test_analyze_one_slice_is_not_analysable(head_ct_dir, tmp_path, dciodvfy, env, gate, reason):
    folder = tmp_path / "one-slice"
    folder.mkdir()
    shutil.copy(head_ct_dir / "01.dcm", folder / "01.dcm")
    done = run_analyze(str(folder), "--pipeline", "ich-baseline", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert f"NOT ANALYSABLE ({gate})" in done.stdout and reason in done.stdout
    series_uid = pydicom.dcmread(folder / "01.dcm", stop_before_pixels=True).SeriesInstanceUID
    (written,) = (tmp_path / "dicom-node-analyze" / str(series_uid)).glob("SR-*.dcm")
    assert str(written) in done.stdout
    assert validate_result_file(written, executable=dciodvfy).errors == ()
    sr = hd.sr.srread(written)
    texts = [str(item.TextValue) for item in _content_items(sr) if "TextValue" in item]
    assert any(reason in text for text in texts), texts


def _content_items(dataset):
    for item in dataset.get("ContentSequence", []):
        yield item
        yield from _content_items(item)


def test_analyze_names_a_file_that_is_not_dicom(head_ct_dir, tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    for name in ("01.dcm", "02.dcm", "03.dcm"):
        shutil.copy(head_ct_dir / name, folder / name)
    (folder / "README.csv").write_text("a sidecar is skipped\n")
    (folder / "04.dcm").write_text("not DICOM at all\n")
    done = run_analyze(str(folder), "--pipeline", "ich-baseline", "--json", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    assert str(folder / "04.dcm") in done.stderr and "not a DICOM file" in done.stderr
    assert not (tmp_path / "dicom-node-analyze").exists()


def test_analyze_folder_with_two_series_lists_them(head_ct_dir, shared_data, tmp_path):
    folder = tmp_path / "study"
    (folder / "a").mkdir(parents=True)
    (folder / "b").mkdir()
    shutil.copy(head_ct_dir / "01.dcm", folder / "a" / "01.dcm")
    chest = sorted((shared_data / "chest-ct" / "lung-30").glob("*"))[0]
    shutil.copy(chest, folder / "b" / "x")
    uids = sorted(
        str(pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID)
        for p in (folder / "a" / "01.dcm", folder / "b" / "x")
    )
    done = run_analyze(str(folder), "--pipeline", "ich-baseline", cwd=tmp_path)
    assert done.returncode == 2
    assert "holds 2 series" in done.stderr and all(uid in done.stderr for uid in uids)
    chosen = run_analyze(
        str(folder), "--pipeline", "ich-baseline", "--json", "--series-uid", uids[0], cwd=tmp_path
    )
    assert chosen.returncode == 0, chosen.stderr
    report = json.loads(chosen.stdout)
    assert report["input"]["series_instance_uid"] == uids[0]
    assert report["input"]["other_series"] == [uids[1]]
    assert report["status"] == "not_analysable"


def test_analyze_unknown_input_names_the_rule(tmp_path):
    path = tmp_path / "scan.mha"
    path.write_bytes(b"\0" * 10)
    done = run_analyze(str(path), cwd=tmp_path)
    assert done.returncode == 2
    assert str(path) in done.stderr and "DICOM folder or a NIfTI file" in done.stderr
