"""``python -m monai.bundle run ... --tracking mlflow``: every bundle's training and evaluation write to a local MLflow
store, read back here: the parameters, the metrics of each epoch and the best model as an artifact."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from conftest import REPO, run_cli

from spine_monai.data import build_mri_datalist, write_datalist
from spine_monai.synthetic.mri import write_mri_dataset
from spine_monai.workflow import run_config_files

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra: pip install 'spine-monai[mlflow]'")

COMMON = {"num_workers": 0, "progress_bar": False, "batch_size": 2, "val_interval": 1}
BUNDLES = {
    "spine_xray_ap_seg": {},
    "spine_xray_cls": {"spatial_size": [192, 128]},
    "spine_mri_seg": {"patch_size": [64, 64], "slices_per_volume": 2, "in_plane_spacing": [3.0, 3.0]},
}


@pytest.fixture(scope="module")
def mri(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracking_mri") / "data"
    write_mri_dataset(root, cases=4, seed=3, shape=(6, 64, 64), workers=1)
    datalist = root.parent / "datalist.json"
    write_datalist(datalist, build_mri_datalist(root, folds=2, test_fraction=0.25, seed=0))
    return root, datalist


def _runs(store):
    from mlflow.tracking import MlflowClient
    from monai.utils import path_to_sqlite_uri

    client = MlflowClient(tracking_uri=path_to_sqlite_uri(str(store)))
    runs = [r for e in client.search_experiments() for r in client.search_runs(e.experiment_id)]
    return client, sorted(runs, key=lambda r: r.info.start_time)


@pytest.mark.parametrize(
    "bundle", [pytest.param(b, marks=[] if b == "spine_xray_ap_seg" else pytest.mark.slow) for b in BUNDLES]
)
def test_training_and_evaluation_are_tracked(bundle, xray_root, datalist, request, tmp_path):
    if bundle == "spine_mri_seg":
        root, dl = request.getfixturevalue("mri")
    else:
        root, dl = xray_root, datalist
    configs = REPO / "bundles" / bundle / "configs"
    out = tmp_path / "run"
    data = {"dataset_dir": str(root), "datalist": str(dl), "output_dir": str(out), **COMMON, **BUNDLES[bundle]}
    run_cli(config_file=str(configs / "train.json"), tracking="mlflow", **{"train#trainer#max_epochs": 2}, **data)
    data.pop("val_interval"), data.pop("batch_size")
    run_cli(config_file=run_config_files(configs, "evaluate.json"), tracking="mlflow", **data)

    client, (train, evaluation) = _runs(out / "mlruns.db")
    assert train.info.status == "FINISHED" and train.data.params["max_epochs"] == "2"
    key = "val_auc" if bundle == "spine_xray_cls" else "val_mean_dice"
    assert len(client.get_metric_history(train.info.run_id, key)) == 2  # one value per epoch
    assert len(client.get_metric_history(train.info.run_id, "train_loss")) >= 2
    # the best model as an artifact, the same file training saved
    local = client.download_artifacts(train.info.run_id, "model.pt", str(tmp_path / "artifacts"))
    best = out / "models" / "model.pt"
    assert hashlib.sha256(Path(local).read_bytes()).digest() == hashlib.sha256(best.read_bytes()).digest()
    eval_key = "eval_auc" if bundle == "spine_xray_cls" else "eval_mean_dice"
    assert eval_key in evaluation.data.metrics
