"""``python -m recbole_fitmm.recommend``: top-k files against a brute-force ranking in numpy."""

from __future__ import annotations

import csv
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from recbole.data.interaction import Interaction

from recbole_fitmm import recommend
from recbole_fitmm.checkpoint import resolve_checkpoint
from recbole_fitmm.errors import CheckpointError
from recbole_fitmm.inference import load_model
from recbole_fitmm.quick_start import run_recbole_fitmm
from tests.conftest import SPLITS, device_params, gpu_id, toy_config

K = 10


@pytest.fixture(scope="module", params=["BPR", "VBPR", "LightGCN", "FITMM", "NeuMF"])
def trained(
    request: pytest.FixtureRequest, toy_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """A two-epoch run of the model, its reloaded model and dataset, and its raw scores."""
    work = tmp_path_factory.mktemp(f"recommend-{request.param}")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        patch.setattr(sys, "argv", ["pytest"])
        values = toy_config(toy_root, checkpoint_dir=str(work / "saved"))
        checkpoint = run_recbole_fitmm(request.param, "toy", config_dict=values)["checkpoint"]
        _, model, dataset, _, _, _ = load_model(checkpoint, {"state": "ERROR"})
    users = torch.arange(1, dataset.user_num)
    with torch.no_grad():
        if request.param == "NeuMF":  # no full_sort_predict: score each user's pairs one by one
            items = torch.arange(dataset.item_num)
            scores = torch.stack(
                [
                    model.predict(
                        Interaction(
                            {dataset.uid_field: u.repeat(len(items)), dataset.iid_field: items}
                        )
                    )
                    for u in users
                ]
            )
        else:
            scores = model.full_sort_predict(Interaction({dataset.uid_field: users}))
    scores = scores.view(len(users), dataset.item_num).double().numpy()
    return {"checkpoint": checkpoint, "dataset": dataset, "scores": scores, "root": toy_root}


def brute_force(trained: dict[str, Any], splits: list[str], k: int) -> dict[str, list]:
    """Top-k of every user from the raw scores, masking PAD and the items of ``splits``' files."""
    dataset = trained["dataset"]
    user_id = dataset.field2token_id[dataset.uid_field]
    item_id = dataset.field2token_id[dataset.iid_field]
    scores = trained["scores"].copy()
    scores[:, 0] = -np.inf
    for split in splits:
        table = pd.read_csv(trained["root"] / "toy" / f"toy.{split}.inter", sep="\t", dtype=str)
        rows = table.iloc[:, 0].map(user_id).to_numpy() - 1
        scores[rows, table.iloc[:, 1].map(item_id).to_numpy()] = -np.inf
    users = dataset.field2id_token[dataset.uid_field][1:]
    items = dataset.field2id_token[dataset.iid_field]
    expected: dict[str, list] = {}
    for row, user in enumerate(users):
        order = np.argsort(-scores[row], kind="stable")[:k]
        order = order[np.isfinite(scores[row, order])]
        expected[str(user)] = [(str(items[i]), scores[row, i]) for i in order]
    return expected


def read_csv(path: Path) -> dict[str, list]:
    """User -> [(item, score)] in rank order; ranks checked to run 1..n per user."""
    found: dict[str, list] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == ["user", "rank", "item", "score"]
        for line in reader:
            rows = found.setdefault(line["user"], [])
            assert int(line["rank"]) == len(rows) + 1
            rows.append((line["item"], float(line["score"])))
    return found


def assert_same(found: dict[str, list], expected: dict[str, list]) -> None:
    """Same users, same scores rank by rank, same items up to the order of tied scores.

    Items of equal score may come in any order (``torch.topk`` does not fix it; an untrained
    NeuMF ties often), and at the cut any of the tied items may be kept.
    """
    assert list(found) == list(expected)
    for user, rows in expected.items():
        scores = [s for _, s in rows]
        assert [s for _, s in found[user]] == pytest.approx(scores, rel=1e-5, abs=1e-6), (
            user
        )  # the batch size changes float rounding
        assert len({item for item, _ in found[user]}) == len(found[user]), user
        groups: list[list[int]] = []  # runs of ranks with tied expected scores
        for rank, score in enumerate(scores):
            if groups and score == pytest.approx(scores[groups[-1][0]], rel=1e-5, abs=1e-6):
                groups[-1].append(rank)
            else:
                groups.append([rank])
        for ranks in groups[:-1]:
            assert {found[user][r][0] for r in ranks} == {rows[r][0] for r in ranks}, user


def test_every_user_gets_the_brute_force_top_k(trained: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "top.csv"
    assert recommend.main([trained["checkpoint"], "--k", str(K), "--out", str(out)]) == 0
    found = read_csv(out)
    expected = brute_force(trained, SPLITS, K)  # by default every seen item is masked
    assert len(found) == trained["dataset"].user_num - 1  # every user present, in id order
    assert all(len(rows) == K for rows in found.values())
    assert_same(found, expected)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_small_budget_scores_in_batches_with_the_same_output(
    trained: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches = []
    real = recommend.top_k

    def counting(*args: Any, **kwargs: Any) -> Any:
        for batch in real(*args, **kwargs):
            batches.append(len(batch[0]))
            yield batch

    monkeypatch.setattr(recommend, "top_k", counting)
    out = tmp_path / "top.csv"
    budget = 3 * trained["dataset"].item_num  # three users per batch
    assert recommend.main([trained["checkpoint"], "--budget", str(budget), "--out", str(out)]) == 0
    assert max(batches) == 3 and sum(batches) == trained["dataset"].user_num - 1
    assert_same(read_csv(out), brute_force(trained, SPLITS, 20))


def test_parquet_round_trip(trained: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "top.parquet"
    args = [trained["checkpoint"], "--k", str(K), "--format", "parquet", "--mask", "train"]
    args += ["--out", str(out)]
    assert recommend.main(args) == 0
    table = pq.read_table(out)
    assert table.column_names == ["user", "rank", "item", "score"]
    assert [str(t) for t in table.schema.types] == ["string", "int32", "string", "float"]
    found: dict[str, list] = {}
    for row in table.to_pylist():
        rows = found.setdefault(row["user"], [])
        assert row["rank"] == len(rows) + 1
        rows.append((row["item"], row["score"]))
    assert_same(found, brute_force(trained, ["train"], K))


def test_listed_users_with_every_split_masked(trained: dict[str, Any], tmp_path: Path) -> None:
    """``--mask all`` (the default); k beyond the number of unmasked items: every one, once."""
    users_file = tmp_path / "users.txt"
    users_file.write_text("5\n\n2\n5\n")
    out = tmp_path / "top.csv"
    k = trained["dataset"].item_num + 5
    args = [trained["checkpoint"], "--users-file", str(users_file), "--mask", "all", "--k", str(k)]
    assert recommend.main([*args, "--out", str(out)]) == 0
    expected = brute_force(trained, SPLITS, k)
    found = read_csv(out)
    assert list(found) == ["5", "2"]  # file order, duplicates dropped
    assert_same(found, {user: expected[user] for user in ("5", "2")})
    assert len(found["5"]) < trained["dataset"].item_num - 1


def test_default_output_lies_beside_the_checkpoint(trained: dict[str, Any]) -> None:
    assert recommend.main([trained["checkpoint"], "--users", "0,1", "--k", "3"]) == 0
    out = Path(trained["checkpoint"]).with_suffix(".top3.csv")
    assert out == recommend.default_output(trained["checkpoint"], 3, "csv")
    found = read_csv(out)
    assert list(found) == ["0", "1"] and all(len(rows) == 3 for rows in found.values())
    out.unlink()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--users", "0,no-such-user"], "unknown user token"),
        (["--users", "[PAD]"], "unknown user token"),
        (["--users", ","], "no users"),
        (["--users-file", "missing.txt"], "cannot read users file"),
        (["--k", "0"], "at least 1"),
    ],
)
def test_bad_requests_end_in_one_error_line(
    trained: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    out = tmp_path / "top.csv"
    assert recommend.main([trained["checkpoint"], *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not out.exists()


def test_an_interrupted_write_keeps_the_old_file(
    trained: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = recommend.top_k

    def failing(*args: Any, **kwargs: Any) -> Any:
        yield next(iter(real(*args, **kwargs)))
        raise RuntimeError("killed")

    monkeypatch.setattr(recommend, "top_k", failing)
    out = tmp_path / "top.parquet"
    out.write_text("previous")
    _, model, _, train_data, _, _ = load_model(trained["checkpoint"], {"state": "ERROR"})
    uids = recommend.user_ids(train_data.dataset)
    with pytest.raises(RuntimeError, match="killed"):
        recommend.write_top_k(model, train_data.dataset, uids, out, fmt="parquet", budget=500)
    assert out.read_text() == "previous"
    left = [p.name for p in tmp_path.iterdir() if p.name != "saved"]  # saved/: FITMM's graph cache
    assert left == [out.name]  # no partial file


def test_a_checkpoint_folder_means_its_newest_best_checkpoint(tmp_path: Path) -> None:
    folder = tmp_path / "saved"
    folder.mkdir()
    for name, age in (("A.pth", 30), ("B.pth", 10), ("B.last.pth", 0), ("C.pth.pending", 0)):
        (folder / name).write_bytes(b"")
        os.utime(folder / name, (time.time() - age, time.time() - age))
    assert resolve_checkpoint(folder) == folder / "B.pth"
    assert resolve_checkpoint(folder / "A.pth") == folder / "A.pth"
    with pytest.raises(CheckpointError, match="holds no best checkpoint"):
        resolve_checkpoint(tmp_path)


def test_original_ids_go_through_the_id_maps(trained: dict[str, Any], tmp_path: Path) -> None:
    """A dataset made by prepare: users given and rows written in the original file's ids."""
    data = tmp_path / "data" / "toy"
    data.mkdir(parents=True)
    for file in (trained["root"] / "toy").iterdir():
        (data / file.name).write_bytes(file.read_bytes())
    dataset = trained["dataset"]
    for side, field in (("u", dataset.uid_field), ("i", dataset.iid_field)):
        tokens = dataset.field2id_token[field][1:]
        lines = ["raw\tnew", *(f"orig-{side}{t}\t{t}" for t in tokens)]
        (data / f"{side}_id_mapping.csv").write_text("\n".join(lines) + "\n")
    checkpoint = str(trained["checkpoint"])
    out = tmp_path / "top.csv"
    loaded = recommend.main(
        [checkpoint, "--users", "orig-u1,orig-u2", "--k", "5", "--original-ids", "--out", str(out)]
    )
    assert loaded == 2  # the checkpoint's data_path still names the toy folder: maps missing
    args = [
        checkpoint,
        "--users",
        "orig-u1,orig-u2",
        "--k",
        "5",
        "--original-ids",
        "--mask",
        "train",
    ]
    with pytest.MonkeyPatch.context() as patch:  # point the run at the copy with the maps
        real = recommend.load_model
        patch.setattr(
            recommend,
            "load_model",
            lambda path, overrides: real(path, {**overrides, "data_path": str(data.parent)}),
        )
        assert recommend.main([*args, "--out", str(out)]) == 0
    rows = read_csv(out)
    expected = brute_force(trained, ["train"], 5)
    assert list(rows) == ["orig-u1", "orig-u2"]
    assert_same(
        rows,
        {
            f"orig-u{user}": [(f"orig-i{item}", score) for item, score in expected[user]]
            for user in ("1", "2")
        },
    )


@pytest.mark.parametrize("device", device_params())
def test_a_checkpoint_loads_and_recommends_on_each_device(
    toy_root: Path, tmp_path: Path, device: str
) -> None:
    """FITMM trained and reloaded on the device; the file's top-k is the scores' masked top-k."""
    values = toy_config(toy_root, gpu_id=gpu_id(device), checkpoint_dir=str(tmp_path / "saved"))
    checkpoint = run_recbole_fitmm("FITMM", "toy", config_dict=values)["checkpoint"]
    config, model, dataset, _, _, _ = load_model(checkpoint, {"gpu_id": gpu_id(device)})
    assert next(model.parameters()).device.type == device == torch.device(config["device"]).type
    users = torch.arange(1, dataset.user_num, device=config["device"])
    with torch.no_grad():
        scores = model.full_sort_predict(Interaction({dataset.uid_field: users}))
    scores = scores.view(len(users), dataset.item_num).double().cpu().numpy()
    expected = brute_force({"dataset": dataset, "scores": scores, "root": toy_root}, SPLITS, K)
    out = tmp_path / "top.csv"
    assert recommend.main([checkpoint, "--k", str(K), "--out", str(out)]) == 0  # stored gpu_id
    assert_same(read_csv(out), expected)
