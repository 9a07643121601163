"""``fashion-mnist``: Zalando's Fashion-MNIST (60,000 train + 10,000 test, 28x28 grey, 10 classes).

Read from the four IDX files (gzip or not): ``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (each
optionally ending in ``.gz``), looked up in ``path=``, else in ``$DEPTHLAB_FASHION_MNIST`` (when
set, only there: a folder without the files is an error naming the variable, not the system
copy read silently), else in ``/usr/share/datasets/fashion-mnist`` (Debian package
``dataset-fashion-mnist``).
The official test set is the test split; validation is drawn from the training part.
"""

from __future__ import annotations

import os
from pathlib import Path

from depthlab.atomic import expand_home
from depthlab.data.dataset import RawData
from depthlab.data.idx import read_idx

ENV = "DEPTHLAB_FASHION_MNIST"
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
CLASS_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
HOW_TO_GET = (
    "install the Debian/Ubuntu package with `sudo apt-get install dataset-fashion-mnist` "
    f"(files go to {SYSTEM_DIR}), or download the four IDX files "
    f"({', '.join(v + '.gz' for v in FILES.values())}) into a folder and pass "
    f"path='FOLDER' or set {ENV}=FOLDER"
)


def candidate_dirs(path: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched, in order: ``path``, else ``$DEPTHLAB_FASHION_MNIST``, else the
    system folder (one folder each time)."""
    if path is not None:
        if not isinstance(path, str | os.PathLike) or not str(path).strip():
            raise ValueError(f"path={path!r} is not accepted; accepted: a folder holding the "
                             "Fashion-MNIST IDX files")
        return [expand_home(path)]
    if os.environ.get(ENV, "").strip():  # the user's choice: no silent fallback
        return [expand_home(os.environ[ENV])]
    return [SYSTEM_DIR]


def _find(folder: Path, stem: str) -> Path | None:
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        p = folder / name
        if p.is_file():
            return p
    return None


def find_files(path: str | os.PathLike | None = None) -> dict[str, Path] | None:
    """The four IDX paths from the first folder that has all of them, else None."""
    for folder in candidate_dirs(path):
        found = {k: _find(folder, stem) for k, stem in FILES.items()}
        if all(found.values()):
            return found  # type: ignore[return-value]
    return None


def available(path: str | os.PathLike | None = None) -> bool:
    return find_files(path) is not None


def fingerprint(path: str | os.PathLike | None = None) -> str | None:
    """The content fingerprint of the four files a load reads (``path``, else
    ``$DEPTHLAB_FASHION_MNIST``): the first 16 hex digits of sha256 over each file's role and
    :func:`depthlab.data.fingerprint.file_digest`, so that runs of another copy (other images)
    get other run ids. None for the system folder's files or a copy of them with the same
    content (the packaged data set: its runs' ids are those of the config alone), or when the
    files are not found (the load says so)."""
    import hashlib

    from depthlab.data.fingerprint import file_digest

    def content(files: dict[str, Path]) -> str:
        h = hashlib.sha256()
        for role, p in sorted(files.items()):
            h.update(f"{role}\0{file_digest(p)}\0".encode())
        return h.hexdigest()[:16]

    files = find_files(path)
    if files is None:
        return None
    system = SYSTEM_DIR.resolve()
    if all(p.resolve().parent == system for p in files.values()):
        return None
    packaged = find_files(SYSTEM_DIR)
    own = content(files)
    return None if packaged is not None and content(packaged) == own else own


def load(
    *, path: str | os.PathLike | None = None, n=None, seed=0, rng=None, dtype=None
) -> RawData:
    """Raw uint8 images (scale 1/255), labels, and the official test part."""
    files = find_files(path)
    if files is None:
        searched = ", ".join(str(d) for d in candidate_dirs(path))
        if path is None and os.environ.get(ENV, "").strip():
            searched += f" (from {ENV}; unset it to read {SYSTEM_DIR})"
        files_given = [d for d in candidate_dirs(path) if d.is_file()]
        if files_given:  # one of the files named where their folder is expected
            searched += (f"; {str(files_given[0])!r} is a file; expected the folder holding the "
                         f"four files (its folder {str(files_given[0].parent)!r}?)")
        raise FileNotFoundError(
            f"Fashion-MNIST files not found (searched: {searched}); expected "
            f"{', '.join(FILES.values())} (optionally .gz). To get them: {HOW_TO_GET}."
        )
    arrays = {k: read_idx(p) for k, p in files.items()}
    for k in ("x_train", "x_test"):
        if arrays[k].ndim != 3:
            raise ValueError(f"{files[k]}: expected (n, 28, 28) images, got {arrays[k].shape}")
    return RawData(
        x=arrays["x_train"],
        y=arrays["y_train"],
        x_test=arrays["x_test"],
        y_test=arrays["y_test"],
        n_classes=10,
        scale=1.0 / 255.0,
        info={
            "source": f"Fashion-MNIST IDX files in {files['x_train'].parent}",
            "description": "Zalando Fashion-MNIST, 28x28 grey clothing images, pixels in [0, 1]",
            "image_shape": tuple(int(s) for s in arrays["x_train"].shape[1:]),
            "class_names": CLASS_NAMES,
            "files": {k: str(p) for k, p in files.items()},
        },
    )
