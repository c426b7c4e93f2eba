"""Encode benchmark: build time and size of the result objects (SEG binary and labelmap, SR).

Usage::

    python -m benchmarks.encode [--runs 5] [--series DIR ...]

For each series (the 28-slice GE head and the 140 x 1 mm Philips phantom) and
two results, a finding *present* (a 10 mL ellipsoid mask in the middle of the
volume) and *absent* (an empty mask, the common case), it times:

* ``SEG binary, all frames``: :func:`dicom_node.results.seg.build_segmentation` as
  the node builds it (every frame kept, so the absent case still has frames);
* ``SEG binary, empty frames omitted``: the same with ``omit_empty_frames``;
* ``SEG labelmap``: the Label Map Segmentation (PS3.3 C.8.20, 8-bit labels, one
  frame per slice) as the node builds it for a destination whose result profile
  asks for it, uncompressed, RLE Lossless and JPEG 2000 lossless;
* ``SR``: :func:`dicom_node.results.sr.build_measurement_report` (TID 1500 with a
  TID 1411 group referencing the SEG segment).

Size is the Part 10 encoding (Explicit VR Little Endian unless compressed).
"""

from __future__ import annotations

import argparse
import time
import warnings
from io import BytesIO
from pathlib import Path

import highdicom as hd
import numpy as np

from benchmarks._common import SHARED_DATA, median, print_machine, print_table

DEFAULT_SERIES = (SHARED_DATA / "head-ct-ge", SHARED_DATA / "head-phantom-philips" / "S2020")
EXPLICIT_LE = "1.2.840.10008.1.2.1"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
JPEG2000_LOSSLESS = "1.2.840.10008.1.2.4.90"


def _encoded_size(dataset) -> int:
    buffer = BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return len(buffer.getvalue())


def _ellipsoid(volume, volume_ml: float) -> np.ndarray:
    """A bool mask (slices, rows, columns): an ellipsoid of about ``volume_ml`` mL at the centre."""
    slices, rows, columns = volume.shape
    dy, dx = volume.pixel_spacing_mm
    dz = float(np.median(np.abs(np.diff(volume.slice_positions_mm)))) or 1.0
    radius_mm = (3 * volume_ml * 1000 / (4 * np.pi)) ** (1 / 3)
    z, y, x = np.ogrid[:slices, :rows, :columns]
    return (
        ((z - slices / 2) * dz / radius_mm) ** 2
        + ((y - rows / 2) * dy / radius_mm) ** 2
        + ((x - columns / 2) * dx / radius_mm) ** 2
    ) <= 1.0


def _timed(build, runs: int):
    build()  # warm-up: imports and caches, not counted
    times, built = [], None
    for _ in range(runs):
        started = time.perf_counter()
        built = build()
        times.append(time.perf_counter() - started)
    return median(times), built


def measure(series_dir: Path, runs: int) -> list[list[object]]:
    """Build every object ``runs`` times for one series; return table rows."""
    from dicom_node.pipelines.base import AlgorithmIdentity, PipelineResult, SegmentFinding
    from dicom_node.results.equipment import EquipmentIdentity
    from dicom_node.results.seg import build_segmentation
    from dicom_node.results.sr import build_measurement_report
    from dicom_node.series.volume import load_ct_volume, read_datasets

    files = sorted(p for p in series_dir.iterdir() if p.is_file())
    datasets = read_datasets(files)
    volume = load_ct_volume(datasets)
    by_uid = {str(ds.SOPInstanceUID): ds for ds in datasets}
    ordered = [by_uid[uid] for uid in volume.sop_instance_uids]
    equipment = EquipmentIdentity(software_versions="benchmark", device_serial_number="BENCH")
    algorithm = AlgorithmIdentity("ich-baseline", "benchmark")
    rows = []
    for case, mask in (("present", _ellipsoid(volume, 10.0)),
                       ("absent", np.zeros(volume.shape, dtype=bool))):
        result = PipelineResult(
            pipeline="ich",
            algorithm=algorithm,
            findings=[SegmentFinding("intracranial hemorrhage", bool(mask.any()),
                                     volume.mask_volume_ml(mask), mask)],
        )
        seg_s, seg = _timed(lambda r=result: build_segmentation(ordered, r, equipment=equipment),
                            runs)
        omit_s, omitted = _timed(
            lambda r=result: build_segmentation(ordered, r, equipment=equipment,
                                                omit_empty_frames=True), runs)
        def labelmap(result=result, syntax=EXPLICIT_LE):
            return build_segmentation(ordered, result, equipment=equipment,
                                      segmentation_type="LABELMAP", transfer_syntax_uid=syntax)

        label_s, labelled = _timed(labelmap, runs)
        rle_s, rle = _timed(lambda: labelmap(syntax=RLE_LOSSLESS), runs)
        j2k_s, j2k = _timed(lambda: labelmap(syntax=JPEG2000_LOSSLESS), runs)
        sr_s, sr = _timed(lambda r=result, seg=seg: build_measurement_report(
            ordered, seg, r, equipment=equipment), runs)
        name = f"{series_dir.name} ({len(files)} sl), {case}"
        for kind, seconds, dataset in (
            ("SEG binary, all frames", seg_s, seg),
            ("SEG binary, empty omitted", omit_s, omitted),
            ("SEG labelmap, all frames", label_s, labelled),
            ("SEG labelmap, RLE Lossless", rle_s, rle),
            ("SEG labelmap, JPEG 2000 lossless", j2k_s, j2k),
            ("SR TID 1500", sr_s, sr),
        ):
            frames = int(dataset.get("NumberOfFrames", 0) or 0)
            size_kib = _encoded_size(dataset) / 1024
            rows.append([name, kind, f"{seconds * 1000:.0f}", f"{size_kib:.1f}", frames or "-"])
        print(f"  {name}: done", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    """Run the encode benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--series", type=Path, nargs="+", default=list(DEFAULT_SERIES))
    args = parser.parse_args(argv)
    print_machine("encode: result objects (highdicom " + hd.__version__ + ")")
    rows = []
    with warnings.catch_warnings():
        # highdicom's person-name warnings quote the source's Patient's Name: not printed.
        warnings.simplefilter("ignore")
        for series_dir in args.series:
            rows.extend(measure(series_dir, args.runs))
    print(f"\nmedian build time of {args.runs} runs; size of the Part 10 encoding")
    print_table(["series, finding", "object", "build ms", "size KiB", "frames"], rows)


if __name__ == "__main__":
    main()
