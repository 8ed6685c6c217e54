"""The embedded demo dataset ``mmsynth``: its generator spec and ``python -m`` entry point.

``dataset_atomic/mmsynth/`` is exactly what :func:`build` writes; regenerate it with::

    python -m recbole_fitmm.data.mmsynth            # into the repository's dataset_atomic/
    python -m recbole_fitmm.data.mmsynth --out DIR  # anywhere else

``tests/test_mmsynth.py`` checks that the committed files equal a fresh build, that they stay small,
and that the dataset is learnable (content and collaborative models beat popularity).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from recbole_fitmm.config import OUTPUT_DATA
from recbole_fitmm.data.synthetic import SyntheticSpec, generate, write_atomic

NAME = "mmsynth"

#: 1,000 users with focused tastes over 16 topics; 1,000 items with a Zipf popularity (the top 20 %
#: of items hold about 40 % of the interactions) and three modalities of decreasing quality: image
#: (128-d, noise 1.0), text (64-d, noise 1.5) and audio (32-d, noise 3.0). Popularity is kept
#: moderate so that content matters: a content-only kNN scorer beats popularity clearly.
MMSYNTH_SPEC = SyntheticSpec(
    n_users=1000,
    n_items=600,
    n_topics=16,
    modalities={"image": 128, "text": 64, "audio": 32},
    noise={"image": 1.0, "text": 1.5, "audio": 3.0},
    min_inter=5,
    mean_inter=14.0,
    taste_concentration=0.05,
    popularity_exponent=0.5,
    seed=2026,
)


def build(root: str | Path = OUTPUT_DATA) -> Path:
    """Generate ``mmsynth`` and write it under ``root``.

    Args:
        root: Folder that receives ``mmsynth/`` (default: the repository's ``dataset_atomic/``).

    Returns:
        The dataset folder ``root/mmsynth``.
    """
    return write_atomic(generate(MMSYNTH_SPEC), root, NAME)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m recbole_fitmm.data.mmsynth [--out DIR]``.

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status (0).
    """
    parser = argparse.ArgumentParser(
        prog="python -m recbole_fitmm.data.mmsynth",
        description="Regenerate the embedded synthetic dataset mmsynth.",
    )
    parser.add_argument(
        "--out", type=Path, default=OUTPUT_DATA, help="folder that receives mmsynth/"
    )
    args = parser.parse_args(argv)
    print(f"wrote {build(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
