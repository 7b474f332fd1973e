"""The hemorrhage detector: save/load with checksum, slice context, the training loop, cross-validation
bookkeeping, operating points."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import save_untrained_classifier
from strokescan.core.labels import DETECTION_OUTPUTS
from strokescan.errors import ModelError
from strokescan.evaluation.thresholds import balanced_threshold
from strokescan.models.classifier import WEIGHTS_FILE, SliceClassifier, load_classifier, scan_score
from strokescan.training import detection
from strokescan.training.detection import DetectorConfig, cross_validate, scan_runs, train_detector


@pytest.fixture(scope="module")
def model() -> SliceClassifier:
    torch.manual_seed(0)
    return SliceClassifier(pretrained=True).eval()


def test_forward_is_trunk_embedding_and_context(model):
    x = torch.rand(3, 3, 96, 96)
    with torch.no_grad():
        emb = model.embed(model.trunk(x)).unsqueeze(0)
        composed = model.context_logits(emb, torch.ones(1, 3, dtype=torch.bool))[0]
        assert torch.allclose(model(x), composed)
        assert model(x).shape == (3, len(DETECTION_OUTPUTS))
    assert model.trunk(x).shape[1] == 192  # block 13 output of EfficientNet-Lite0


def test_context_reaches_two_slices_and_no_further(model):
    emb = torch.randn(1, 7, model.fc.in_features)
    valid = torch.ones(1, 7, dtype=torch.bool)
    with torch.no_grad():
        base = model.context_logits(emb, valid)
        changed = emb.clone()
        changed[0, 0] += 5.0
        moved = (model.context_logits(changed, valid) - base).abs().sum(-1)[0]
    assert (moved[:3] > 0).all() and torch.allclose(moved[3:], torch.zeros(4))


def test_save_load_round_trip_and_checksum_refusal(tmp_path):
    save_untrained_classifier(tmp_path)
    loaded, plan = load_classifier(tmp_path)
    assert plan.outputs == DETECTION_OUTPUTS and plan.threshold("slice", "sensitive") == 0.5
    assert len(plan.weights_sha256) == 64 and (tmp_path / WEIGHTS_FILE).stat().st_size < 30 * 2**20
    raw = bytearray((tmp_path / WEIGHTS_FILE).read_bytes())
    raw[-100] ^= 0xFF
    (tmp_path / WEIGHTS_FILE).write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="checksum"):
        load_classifier(tmp_path)


def test_missing_model_is_a_typed_error(tmp_path):
    with pytest.raises(ModelError, match="no classifier here"):
        load_classifier(tmp_path)


def _synthetic(n_patients: int, per: int, seed: int) -> tuple[pd.DataFrame, torch.Tensor, np.ndarray]:
    """Patients of ``per`` slices; positives carry a signal in some feature channels; subtypes known only for
    even patients."""
    rng = np.random.default_rng(seed)
    n = n_patients * per
    y = (rng.random(n) < 0.3).astype(float)
    x = rng.normal(0, 1, (2, n, 192, 3, 3)).astype(np.float32)
    x[:, y == 1, :16] += 1.5
    manifest = pd.DataFrame({"patient": [f"p{i // per:02d}" for i in range(n)], "source": "s", "label": y,
                             "slice_index": np.tile(np.arange(per), n_patients)})
    for name in DETECTION_OUTPUTS[1:]:
        manifest[name] = np.where(np.arange(n) // per % 2 == 0, y, np.nan)
    return manifest, torch.from_numpy(x).half(), np.full(n, 0.5)


def test_training_learns_a_separable_signal_and_early_stops():
    manifest, feats, _ = _synthetic(12, 6, 0)
    labels = detection.label_matrix(manifest)
    runs = scan_runs(manifest)
    cfg = DetectorConfig(max_epochs=4, patience=2, runs_per_batch=4, run_length=4)
    model, best_epoch, history = train_detector(feats, labels, runs[:8], runs[8:], cfg)
    assert 1 <= best_epoch <= 4 and len(history) >= best_epoch
    assert max(h["val_auc"] for h in history) > 0.9


def test_unknown_labels_do_not_count_in_the_loss():
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    labels = torch.tensor([[1.0, float("nan")], [0.0, float("nan")]])
    loss = detection._masked_bce(logits, labels, torch.ones(2))
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], labels[:, 0])
    assert torch.isclose(loss, expected)


def test_cross_validation_keeps_test_and_validation_folds_out_of_training_and_resumes(tmp_path, monkeypatch):
    manifest, feats, brain = _synthetic(10, 6, 2)
    row_fold = np.repeat(np.arange(10) // 2, 6)
    seen_rows = []
    real = detection.train_detector

    def spy(feats_, labels_, train_runs, *a, **kw):
        rows = np.concatenate(train_runs)
        seen_rows.append(sorted(set(row_fold[rows])))
        return real(feats_, labels_, train_runs, *a, **kw)

    monkeypatch.setattr(detection, "train_detector", spy)
    cfg = DetectorConfig(max_epochs=2, patience=1, runs_per_batch=4, run_length=6)
    oof = cross_validate(manifest, feats, brain, row_fold, ("s",), cfg, tmp_path)
    assert seen_rows == [sorted(set(range(5)) - {k, (k + 1) % 5}) for k in range(5)]
    assert oof["p_any"].notna().all() and oof["fold"].tolist() == row_fold.tolist()
    assert json.loads((tmp_path / "fold_0.json").read_text())["val_fold"] == 1
    seen_rows.clear()
    again = cross_validate(manifest, feats, brain, row_fold, ("s",), cfg, tmp_path)  # resumes: nothing retrained
    assert seen_rows == [] and np.allclose(again["p_any"], oof["p_any"])


def test_sources_outside_the_protocol_never_train(tmp_path, monkeypatch):
    manifest, feats, brain = _synthetic(10, 6, 3)
    manifest.loc[manifest["patient"].isin(["p00", "p05"]), "source"] = "external"
    row_fold = np.repeat(np.arange(10) // 2, 6)
    trained = []
    real = detection.train_detector
    monkeypatch.setattr(detection, "train_detector", lambda f, l, runs, *a, **kw: (
        trained.extend(manifest.loc[np.concatenate(runs), "source"]), real(f, l, runs, *a, **kw))[1])
    oof = cross_validate(manifest, feats, brain, row_fold, ("s",), DetectorConfig(max_epochs=1), tmp_path)
    assert set(trained) == {"s"} and oof.loc[manifest["source"] == "external", "p_any"].notna().all()


def test_balanced_threshold_maximises_youden_and_scan_scores():
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.6, 0.5, 0.7, 0.9])
    t = balanced_threshold(y, p)
    assert t == 0.7  # J = 2/3 at 0.5 (sens 1, spec 2/3) and at 0.7 (sens 2/3, spec 1): the higher wins
    assert scan_score(np.array([0.1, 0.9, 0.8, 0.7]), "max") == 0.9
    assert scan_score(np.array([0.1, 0.9, 0.8, 0.7]), "top3_mean") == pytest.approx(0.8)
    assert scan_score(np.array([]), "max") == 0.0


def test_linear_probe_never_sees_the_labels_of_the_fold_it_scores():
    from strokescan.training.probe import linear_probe

    rng = np.random.default_rng(0)
    patients = np.repeat([f"p{i}" for i in range(10)], 6)
    y = rng.integers(0, 2, len(patients)).astype(float)
    feats = torch.tensor(rng.normal(size=(1, len(y), 8, 2, 2)) + y[None, :, None, None, None], dtype=torch.float32)
    manifest = pd.DataFrame({"patient": patients, "label": y, "slice_index": np.tile(np.arange(6), 10)})
    folds = {"n_folds": 2, "folds": {"0": [f"p{i}" for i in range(5)], "1": [f"p{i}" for i in range(5, 10)]}}
    p = linear_probe(feats, manifest, folds)
    flipped = manifest.assign(label=np.where(np.isin(patients, folds["folds"]["0"]), 1 - y, y))
    q = linear_probe(feats, flipped, folds)
    fold0 = np.isin(patients, folds["folds"]["0"])
    assert np.allclose(p[fold0], q[fold0])  # fold 0's scores do not depend on fold 0's labels
    assert not np.allclose(p[~fold0], q[~fold0])  # ... but fold 1's do (trained on fold 0)
    assert ((p > 0.5) == (y == 1)).mean() > 0.8
