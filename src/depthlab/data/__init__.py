"""Built-in data sets (offline), seeded train/validation/test splits, and user data files.

>>> from depthlab.data import load_dataset
>>> ds = load_dataset("mnist5k", seed=0, standardize=True)   # doctest: +SKIP

Built-ins: see ``DATASETS`` / ``list_datasets()``. A path to a ``.npz``, ``.csv`` or IDX file (or a
folder of IDX files) is accepted in place of a name. Nothing is ever downloaded.
"""

from depthlab.data.cache import cache_dir
from depthlab.data.dataset import Dataset, RawData, build_dataset
from depthlab.data.files import load_file
from depthlab.data.idx import read_idx, write_idx
from depthlab.data.registry import DATASETS, find_builtin, list_datasets, load_dataset
from depthlab.data.shapeset import make_shapeset
from depthlab.data.standardize import apply_standardizer, fit_standardizer
from depthlab.data.synthetic import make_clusters, make_spirals

__all__ = [
    "DATASETS",
    "Dataset",
    "RawData",
    "apply_standardizer",
    "build_dataset",
    "cache_dir",
    "find_builtin",
    "fit_standardizer",
    "list_datasets",
    "load_dataset",
    "load_file",
    "make_clusters",
    "make_shapeset",
    "make_spirals",
    "read_idx",
    "write_idx",
]
