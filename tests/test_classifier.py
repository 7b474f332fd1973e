"""The slice classifier: save/load with checksum, the training loop, cross-validation bookkeeping."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from strokescan.errors import ModelError
from strokescan.models.classifier import WEIGHTS_FILE, ClassifierPlan, SliceClassifier, load_classifier, save_classifier
from strokescan.preprocessing.pipeline import SlicePlan
from strokescan.training.classifier import TrainConfig, cross_validate, train_top


def _plan() -> ClassifierPlan:
    return ClassifierPlan(
        slice_plan=SlicePlan(), calibration={"method": "platt", "a": 1.0, "b": 0.0},
        slice_threshold=0.5, scan_threshold=0.6, threshold_rule="test",
    )


@pytest.fixture(scope="module")
def model() -> SliceClassifier:
    torch.manual_seed(0)
    return SliceClassifier(pretrained=True).eval()


def test_trunk_and_top_compose_to_the_full_network(model):
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.allclose(model(x), model.top(model.trunk(x)))
    assert model.trunk(x).shape[1] == 192  # block 13 output of EfficientNet-Lite0


def test_save_load_round_trip_and_checksum_refusal(model, tmp_path):
    save_classifier(model, _plan(), tmp_path)
    loaded, plan = load_classifier(tmp_path)
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.allclose(model(x), loaded(x), atol=0.05)  # fp16 storage
    assert plan.slice_plan == SlicePlan() and len(plan.weights_sha256) == 64
    assert (tmp_path / WEIGHTS_FILE).stat().st_size < 30 * 2**20
    raw = bytearray((tmp_path / WEIGHTS_FILE).read_bytes())
    raw[-100] ^= 0xFF
    (tmp_path / WEIGHTS_FILE).write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="checksum"):
        load_classifier(tmp_path)


def test_missing_model_is_a_typed_error(tmp_path):
    with pytest.raises(ModelError, match="no classifier here"):
        load_classifier(tmp_path)


def _synthetic_features(n: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """Two views of (n, 192, 3, 3) features where positives carry a signal in some channels."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(float)
    x = rng.normal(0, 1, (2, n, 192, 3, 3)).astype(np.float32)
    x[:, y == 1, :16] += 1.5
    return torch.from_numpy(x).half(), y


def test_training_learns_a_separable_signal_and_early_stops():
    feats, y = _synthetic_features(96, 0)
    vfeats, vy = _synthetic_features(48, 1)
    cfg = TrainConfig(max_epochs=4, patience=2, batch_size=32)
    model, best_epoch, history = train_top(feats, y, vfeats[0], vy, cfg)
    assert 1 <= best_epoch <= 4 and len(history) >= best_epoch
    assert max(h["val_auc"] for h in history) > 0.9


def test_cross_validation_keeps_test_folds_out_of_training_and_resumes(tmp_path, monkeypatch):
    feats, y = _synthetic_features(60, 2)
    patients = [f"p{i // 6}" for i in range(60)]  # 10 patients, 6 slices each
    y = np.repeat(np.arange(10) % 2, 6).astype(float)
    feats[:, y == 1, :16] += 1.5
    manifest = pd.DataFrame({"patient": patients, "label": y, "patient_label": y})
    folds = {str(k): [f"p{2 * k}", f"p{2 * k + 1}"] for k in range(5)}
    seen_rows = []
    import strokescan.training.classifier as tc

    real_train_top = tc.train_top

    def spy(feats_train, y_train, *a, **kw):
        seen_rows.append(len(y_train))
        return real_train_top(feats_train, y_train, *a, **kw)

    monkeypatch.setattr(tc, "train_top", spy)
    cfg = TrainConfig(max_epochs=2, patience=1, batch_size=16)
    oof = cross_validate(manifest, feats, folds, cfg, tmp_path)
    assert seen_rows == [36] * 5  # 3 of 5 folds train; test and early-stopping folds are held out
    assert oof["probability"].notna().all() and oof["fold"].tolist() == [i // 12 for i in range(60)]
    assert json.loads((tmp_path / "fold_0.json").read_text())["val_fold"] == 1
    seen_rows.clear()
    again = cross_validate(manifest, feats, folds, cfg, tmp_path)  # resumes: nothing retrained
    assert seen_rows == [] and np.allclose(again["probability"], oof["probability"])


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
