"""CTA benchmark: time per CT angiography series on CPU, stage by stage.

Usage::

    python -m benchmarks.cta [--cases 6] [--runs 3] [--json FILE]

Synthetic angiograms are drawn into the real GE head (28 slices of 512 x
512, ``../shared/data/head-ct-ge``; normal and ICA-T/M1/M2 occlusions) and
written as Part 10 files. For each series, ``--runs`` times:

* ``read``: reading the files (pixel data included);
* ``decode``: :func:`load_ct_volume` (decode, rescale to HU, sort);
* the stages of the ``cta`` pipeline, timed separately: ``brain mask``
  (:func:`cta_intracranial_mask`), ``vessels`` (blur, CLAHE, adaptive
  threshold, cleanup), ``midline``, ``lvo`` (circle of Willis, territories,
  skeleton, trunk profiles);
* ``pipeline``: ``CtaLvoPipeline.run`` as the worker calls it (all the
  stages above again, end to end);
* ``results``: the SEG (two segments, all 28 frames) and the TID 1500 SR.

Medians over runs and series are printed in seconds with the machine. The
pipeline object is created once and reused, as a worker process does.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from benchmarks._common import SHARED_DATA, median, print_machine, print_table

STAGES = ("read", "decode", "brain mask", "vessels", "midline", "lvo", "pipeline", "results")
CASES = (
    (None, None),
    ("M1", "left"),
    ("ICA-T", "right"),
    ("M2", "left"),
    (None, None),
    ("M1", "right"),
)


def main() -> None:
    """Run the benchmark and print the table (and JSON when asked)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=6, help="synthetic series (max 6 kinds)")
    parser.add_argument("--runs", type=int, default=3, help="repetitions per series")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()

    from dicom_node.imaging.midline import estimate_midsagittal_plane
    from dicom_node.imaging.occlusion import analyse_large_vessel_occlusion
    from dicom_node.imaging.vessels import cta_intracranial_mask, segment_intracranial_vessels
    from dicom_node.pipelines.cta import CtaLvoPipeline
    from dicom_node.results import build_results
    from dicom_node.results.equipment import EquipmentIdentity
    from dicom_node.series.volume import load_ct_volume, read_datasets
    from dicom_node.training.synthetic_cta import generate_synthetic_cta, locate_head_landmarks

    print_machine("CTA pipeline, time per series on CPU")
    base = read_datasets(sorted((SHARED_DATA / "head-ct-ge").glob("*.dcm")))
    landmarks = locate_head_landmarks(load_ct_volume(base))
    pipeline = CtaLvoPipeline()
    equipment = EquipmentIdentity(software_versions="benchmark")
    timings: dict[str, list[float]] = {stage: [] for stage in STAGES}
    rows = []
    with tempfile.TemporaryDirectory(prefix="cta-bench-") as tmp:
        for index in range(args.cases):
            occlusion, side = CASES[index % len(CASES)]
            cta = generate_synthetic_cta(
                base, seed=5000 + index, occlusion=occlusion, side=side, landmarks=landmarks
            )
            folder = Path(tmp) / f"case{index}"
            folder.mkdir()
            for ds in cta.datasets:
                ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
            files = sorted(folder.glob("*.dcm"))
            per_case: dict[str, list[float]] = {stage: [] for stage in STAGES}
            result = None
            for _ in range(args.runs):
                t0 = time.perf_counter()
                datasets = read_datasets(files)
                t1 = time.perf_counter()
                volume = load_ct_volume(datasets)
                t2 = time.perf_counter()
                brain = cta_intracranial_mask(volume)
                t3 = time.perf_counter()
                vessels = segment_intracranial_vessels(volume, brain)
                t4 = time.perf_counter()
                plane = estimate_midsagittal_plane(volume, brain)
                t5 = time.perf_counter()
                analyse_large_vessel_occlusion(volume, vessels, plane)
                t6 = time.perf_counter()
                result = pipeline.run(volume)
                t7 = time.perf_counter()
                by_uid = {str(ds.SOPInstanceUID): ds for ds in datasets}
                build_results(
                    [by_uid[u] for u in volume.sop_instance_uids], result, equipment=equipment
                )
                t8 = time.perf_counter()
                for stage, seconds in zip(
                    STAGES,
                    (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5, t7 - t6, t8 - t7),
                    strict=True,
                ):
                    per_case[stage].append(seconds)
            for stage in STAGES:
                timings[stage].extend(per_case[stage])
            lvo = result.details["lvo"] if result is not None else {}
            truth = f"{occlusion} {side}" if occlusion else "normal"
            found = f"LVO {lvo.get('segment')} {lvo.get('side')}" if lvo.get("suspected") else "-"
            rows.append(
                [f"seed {5000 + index}", truth, found]
                + [f"{median(per_case[s]):.2f}" for s in STAGES]
            )
    print_table(["series", "truth", "result", *STAGES], rows)
    totals = {stage: round(median(values), 3) for stage, values in timings.items()}
    end_to_end = totals["read"] + totals["decode"] + totals["pipeline"] + totals["results"]
    print(
        f"\nmedian over {args.cases} series x {args.runs} runs (s): "
        + ", ".join(f"{k} {v:.2f}" for k, v in totals.items())
    )
    print(f"read + decode + pipeline + SEG/SR: {end_to_end:.2f} s per 28-slice series")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"median_s": totals, "end_to_end_s": round(end_to_end, 3), "rows": rows},
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
