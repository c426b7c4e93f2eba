"""The ICH ResUNet, its loss and metrics, threshold choice, and model packages."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from dicom_node.errors import ModelPackageError
from dicom_node.imaging.ich_input import ICH_CLASSES, ICH_SUBTYPES
from dicom_node.pipelines.ich import IchModelPackage, sha256_file, subtype_labels
from dicom_node.training.evaluate_ich import evaluation_plan, roc_auc
from dicom_node.training.train_ich import youden_threshold

keras = pytest.importorskip("keras")
from dicom_node.pipelines.ich_layers import (  # noqa: E402
    IGNORE_LABEL,
    ClassDice,
    DiceCrossEntropyLoss,
)
from dicom_node.training.resunet import build_resunet  # noqa: E402


def test_resunet_maps_windows_to_class_probabilities():
    model = build_resunet(size=32, channels=9, classes=ICH_CLASSES, filters=(4, 8))
    out = np.asarray(model.predict_on_batch(np.random.default_rng(0).random((2, 32, 32, 9))))
    assert out.shape == (2, 32, 32, ICH_CLASSES)
    assert np.allclose(out.sum(axis=-1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="multiple of"):
        build_resunet(size=30, channels=9, classes=6, filters=(4, 8, 16))


def test_loss_is_lower_for_the_right_answer_and_ignores_unknown_subtype():
    loss = DiceCrossEntropyLoss(3)
    labels = np.zeros((1, 4, 4), dtype=np.int32)
    labels[0, :2, :2] = 1
    right = np.eye(3, dtype=np.float32)[labels] * 0.98 + 0.01
    wrong = np.eye(3, dtype=np.float32)[(labels + 1) % 3] * 0.98 + 0.01
    assert float(loss(labels, right)) < 0.2 < float(loss(labels, wrong))
    # pixels labelled IGNORE_LABEL change nothing, whatever is predicted there
    ignored = labels.copy()
    ignored[0, 3, 3] = IGNORE_LABEL
    other = right.copy()
    other[0, 3, 3] = [0.01, 0.01, 0.98]
    assert float(loss(ignored, other)) == pytest.approx(float(loss(ignored, right)), abs=1e-6)


def test_class_dice_metric_counts_one_class():
    metric = ClassDice(2, "dice_two")
    labels = np.array([[[2, 2, 0, 0]]])
    predicted = np.eye(3, dtype=np.float32)[np.array([[[2, 0, 2, 0]]])]
    metric.update_state(labels, predicted)
    assert float(metric.result()) == pytest.approx(0.5)
    metric.reset_state()
    assert float(metric.result()) == 0.0


def test_youden_threshold_separates_and_reports_its_operating_point():
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    truth = np.array([False, False, False, True, True, True])
    threshold, sensitivity, specificity = youden_threshold(scores, truth)
    assert 0.3 < threshold <= 0.7
    assert (sensitivity, specificity) == (1.0, 1.0)
    with pytest.raises(ValueError, match="both positive and negative"):
        youden_threshold(scores, np.ones(6, dtype=bool))


def test_roc_auc_is_the_mann_whitney_statistic():
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == pytest.approx(0.75)
    assert roc_auc([0.5, 0.5], [False, True]) == pytest.approx(0.5)
    assert roc_auc([0.1], [True]) is None


def test_evaluation_plan_is_balanced_and_seeded():
    plan = evaluation_plan(120, 900_000)
    kinds = [subtypes for _, subtypes in plan]
    assert len(plan) == 120 and len({seed for seed, _ in plan}) == 120
    assert kinds.count(()) == 30
    for subtype in ICH_SUBTYPES:
        assert kinds.count((subtype,)) == 15
    assert sum(len(k) == 2 for k in kinds) == 15
    assert plan == evaluation_plan(120, 900_000)


def _fake_package(tmp_path, labels=ICH_SUBTYPES):
    from dicom_node.imaging.ich_input import IchInputSpec

    (tmp_path / "model.keras").write_bytes(b"weights")
    manifest = {
        "name": "ich-test",
        "version": "0.0.1",
        "input": IchInputSpec().to_manifest(),
        "labels": [{"value": i, "finding": s} for i, s in enumerate(labels, 1)],
        "detection": {"any_ich_threshold": 0.5, "min_volume_ml": 0.05, "min_component_ml": 0.02},
        "weights_sha256": sha256_file(tmp_path / "model.keras"),
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    return tmp_path


def test_package_verifies_the_weights_against_the_manifest(tmp_path):
    folder = _fake_package(tmp_path)
    package = IchModelPackage.load(folder)
    assert (package.version, package.threshold) == ("0.0.1", 0.5)
    (folder / "model.keras").write_bytes(b"weights, changed")
    with pytest.raises(ModelPackageError, match="sha256"):
        IchModelPackage.load(folder)


def test_region_assignment_gives_a_lesion_one_subtype_and_voxel_keeps_the_old_rule():
    # Two separate blobs on (slices, rows, columns, 1 + 5) probabilities.
    probabilities = np.zeros((3, 8, 8, ICH_CLASSES), dtype=np.float32)
    probabilities[..., 0] = 1.0
    blood = np.zeros((3, 8, 8), dtype=bool)
    blood[1, 1:4, 1:4] = True  # lesion A: epidural 0.6 in 6 voxels, subdural 0.7 in 3
    probabilities[1, 1:4, 1:4] = [0.1, 0.6, 0.3, 0, 0, 0]
    probabilities[1, 3, 1:4] = [0.1, 0.2, 0.7, 0, 0, 0]
    blood[1, 6:8, 6:8] = True  # lesion B: intraventricular everywhere
    probabilities[1, 6:8, 6:8] = [0.1, 0, 0, 0, 0, 0.9]
    voxel = subtype_labels(probabilities, blood, "voxel")
    assert set(np.unique(voxel[blood])) == {1, 2, 5}  # lesion A split in two subtypes
    region = subtype_labels(probabilities, blood, "region")
    assert (region[1, 1:4, 1:4] == 1).all()  # summed: epidural 4.2 > subdural 3.9
    assert (region[1, 6:8, 6:8] == 5).all()
    assert (region[~blood] == 0).all()
    assert not subtype_labels(probabilities, np.zeros_like(blood), "region").any()
    with pytest.raises(ValueError, match="not one of"):
        subtype_labels(probabilities, blood, "lesion")


def test_package_reads_the_subtype_assignment_and_refuses_an_unknown_one(tmp_path):
    folder = _fake_package(tmp_path)
    assert IchModelPackage.load(folder).subtype_assignment == "voxel"  # key absent
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["detection"]["subtype_assignment"] = "region"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert IchModelPackage.load(folder).subtype_assignment == "region"
    manifest["detection"]["subtype_assignment"] = "majority"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelPackageError, match="subtype_assignment 'majority'"):
        IchModelPackage.load(folder)


def test_package_refuses_missing_files_and_wrong_labels(tmp_path):
    with pytest.raises(ModelPackageError, match="needs manifest.json"):
        IchModelPackage.load(tmp_path)
    (tmp_path / "p").mkdir()
    folder = _fake_package(tmp_path / "p")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["labels"] = list(reversed(manifest["labels"]))
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelPackageError, match="labels"):
        IchModelPackage.load(folder)
    del manifest["detection"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelPackageError, match="incomplete manifest"):
        IchModelPackage.load(folder)


@pytest.mark.slow
def test_train_evaluate_and_reload_a_tiny_model(tmp_path, head_ct_dir):
    """The whole train -> package -> evaluate path, on a few cases and steps."""
    from dicom_node.pipelines.ich import IchPipeline, load_keras_model
    from dicom_node.training.evaluate_ich import evaluate_ich
    from dicom_node.training.ich_data import load_base_volume
    from dicom_node.training.train_ich import IchTrainingConfig, train_ich

    config = IchTrainingConfig(
        base_dir=head_ct_dir,
        output_dir=tmp_path / "pkg",
        work_dir=tmp_path / "work",
        version="0.0.1-test",
        train_cases=4,
        validation_cases=4,
        epochs=1,
        steps_per_epoch=2,
        batch_size=2,
        processes=1,
        filters=(4, 8, 16, 32),
    )
    package_dir = train_ich(config)
    manifest = json.loads((package_dir / "manifest.json").read_text())
    assert manifest["weights_sha256"] == sha256_file(package_dir / "model.keras")
    assert [entry["finding"] for entry in manifest["labels"]] == list(ICH_SUBTYPES)
    assert manifest["training"]["data"]["cases"] == 4
    assert 0.0 <= manifest["detection"]["any_ich_threshold"] <= 1.0
    assert "Not for clinical use" in (package_dir / "MODEL_CARD.md").read_text()
    assert (tmp_path / "work" / "checkpoints" / "epoch-01.keras").is_file()

    # the saved file gives the same predictions as the model that wrote it
    reloaded = load_keras_model(package_dir / "model.keras")
    checkpoint = keras.saving.load_model(tmp_path / "work" / "checkpoints" / "epoch-01.keras")
    x = np.random.default_rng(1).random((2, 128, 128, 9)).astype(np.float32)
    assert np.allclose(reloaded.predict_on_batch(x), checkpoint.predict_on_batch(x), atol=1e-6)

    result = IchPipeline(package_dir).run(load_base_volume(head_ct_dir))
    assert result.findings and result.algorithm.version == "0.0.1-test"
    assert result.findings[0].mask.shape == (28, 512, 512)

    report = evaluate_ich(
        package_dir, head_ct_dir, cases=4, processes=1, report_path=tmp_path / "report"
    )
    assert report["summary"]["cases"] == 4
    assert set(report["per_subtype"]) == set(ICH_SUBTYPES)
    assert (tmp_path / "report.md").read_text().startswith("# ICH model evaluation")
    assert "Held-out synthetic set: 4 series" in (package_dir / "MODEL_CARD.md").read_text()

    # a copied package with changed weights is refused before use
    tampered = tmp_path / "tampered"
    shutil.copytree(package_dir, tampered)
    with open(tampered / "model.keras", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ModelPackageError, match="sha256"):
        IchPipeline(tampered)


def test_custom_objects_keep_the_registered_names_saved_files_use():
    # Saved .keras files (training checkpoints, packages saved compiled) name the
    # objects by these strings; the module they are defined in is not consulted first.
    loss_name = "dicom_node>DiceCrossEntropyLoss"
    assert keras.saving.get_registered_name(DiceCrossEntropyLoss) == loss_name
    assert keras.saving.get_registered_name(ClassDice) == "dicom_node>ClassDice"
    assert keras.saving.get_registered_object(loss_name) is DiceCrossEntropyLoss
