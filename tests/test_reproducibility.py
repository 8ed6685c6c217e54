"""Same seed, same result; every result and checkpoint says what it was made from."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import recbole
import scipy
import torch
import yaml

import recbole_fitmm
from recbole_fitmm import run_recbole_fitmm
from recbole_fitmm.checkpoint import read_checkpoint
from recbole_fitmm.provenance import code_digest, source_digest
from tests.conftest import toy_config


def _weights(path: str) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["state_dict"]


@pytest.mark.parametrize("model", ["BPR", "VBPR"])
def test_same_seed_same_metrics_and_weights(toy_root: Path, model: str) -> None:
    values = toy_config(toy_root, epochs=2, train_batch_size=256)
    first = run_recbole_fitmm(model, "toy", config_dict=values)
    second = run_recbole_fitmm(model, "toy", config_dict=values)
    assert first["checkpoint"] != second["checkpoint"]  # two runs never share files
    assert first["test_result"] == second["test_result"]
    assert first["best_valid_result"] == second["best_valid_result"]
    a, b = _weights(first["last_checkpoint"]), _weights(second["last_checkpoint"])
    assert all(torch.equal(a[key], b[key]) for key in a)
    if model == "BPR":
        other = run_recbole_fitmm(model, "toy", config_dict={**values, "seed": 1})
        c = _weights(other["last_checkpoint"])
        assert not all(torch.equal(a[key], c[key]) for key in a)


def test_deterministic_setting_is_restored(toy_root: Path) -> None:
    assert not torch.are_deterministic_algorithms_enabled()
    run_recbole_fitmm("BPR", "toy", config_dict=toy_config(toy_root, epochs=1), saved=False)
    assert not torch.are_deterministic_algorithms_enabled()


def test_provenance_beside_every_output(toy_root: Path) -> None:
    data_folder = toy_root / "toy"
    before = {p.name: p.stat().st_mtime_ns for p in data_folder.iterdir()}
    result = run_recbole_fitmm("VBPR", "toy", config_dict=toy_config(toy_root, epochs=1))
    assert {p.name: p.stat().st_mtime_ns for p in data_folder.iterdir()} == before

    provenance = result["provenance"]
    assert provenance["versions"] == {
        "python": provenance["versions"]["python"],
        "torch": str(torch.__version__),
        "recbole": recbole.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "pandas": pd.__version__,
        "recbole_fitmm": recbole_fitmm.__version__,
        "recbole_fitmm_revision": provenance["versions"]["recbole_fitmm_revision"],
    }
    head = subprocess.run(
        ["git", "-C", str(Path(recbole_fitmm.__file__).parents[1]), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert provenance["versions"]["recbole_fitmm_revision"].split("+")[0] == head
    files = provenance["dataset_fingerprint"]["files"]
    expected_roles = {"train.inter", "valid.inter", "test.inter", "image.npy", "text.npy"}
    assert set(files) == expected_roles
    for role, entry in files.items():
        content = (data_folder / f"toy.{role}").read_bytes()
        assert entry == {"sha256": hashlib.sha256(content).hexdigest(), "bytes": len(content)}
    config = provenance["config"]
    assert config["model"] == "VBPR" and config["MODEL_TYPE"] == "GENERAL"
    assert config["device"] == "cpu" and config["modalities"] == ["image", "text"]
    yaml.safe_dump(config)  # plain data only

    outputs = [result["checkpoint"], result["last_checkpoint"]]
    sidecars = [Path(path + ".json") for path in outputs] + [Path(result["result_file"])]
    for sidecar in sidecars:
        record = json.loads(sidecar.read_text(), parse_constant=_refuse)
        assert record["provenance"]["dataset_fingerprint"] == provenance["dataset_fingerprint"]
        assert record["provenance"]["config"] == json.loads(json.dumps(config))
    for path in outputs:
        assert read_checkpoint(path)["provenance"] == provenance
    written = json.loads(Path(result["result_file"]).read_text())
    assert written["test_result"] == result["test_result"]
    assert written["checkpoint"] == result["checkpoint"]


def _refuse(constant: str) -> None:
    raise AssertionError(f"non-standard JSON constant {constant}")


def test_run_without_saving_writes_no_checkpoint(toy_root: Path, tmp_path: Path) -> None:
    result = run_recbole_fitmm(
        "BPR", "toy", config_dict=toy_config(toy_root, epochs=1), saved=False
    )
    assert result["checkpoint"] is None and result["result_file"] is None
    assert result["provenance"]["dataset_fingerprint"]["sha256"]
    assert not list((tmp_path / "saved").glob("*.pth"))


def test_the_code_digest_follows_the_sources_not_their_place_or_other_files(
    tmp_path: Path,
) -> None:
    package = Path(recbole_fitmm.__file__).parent
    copy = tmp_path / "site" / "recbole_fitmm"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    digest = source_digest(copy)
    assert digest == source_digest(package)  # a checkout and an installed copy agree
    assert code_digest().startswith(source_digest(package) + "-")
    (copy / "__pycache__").mkdir()
    (copy / "__pycache__" / "cli.cpython-311.pyc").write_bytes(b"\x00compiled")
    (copy / "NOTES.txt").write_text("not code")
    assert source_digest(copy) == digest
    cli = copy / "cli.py"
    cli.write_text(cli.read_text() + "\n# one more line\n")
    changed = source_digest(copy)
    assert changed != digest
    cli.rename(copy / "cli2.py")  # same bytes under another name: another module
    assert source_digest(copy) not in {digest, changed}
