"""Which kernels NumPy's BLAS runs in this process, in words, for the benchmarks' headers.

Some hosts set ``OPENBLAS_CORETYPE`` (and ``OPENBLAS_L2_SIZE``) in the environment, because
older OpenBLAS builds computed wrong results or crashed on their CPUs. A current NumPy's
OpenBLAS runs slower kernels under them (on this project's AVX-512 machine ``Haswell``, AVX2,
instead of ``SkylakeX``), so ``make bench`` runs each benchmark with both unset, in that command
alone (the tests and CI keep them), and each benchmark prints this line to say which ran.
"""

from __future__ import annotations

import os

KERNEL_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def numpy_blas() -> str:
    """``"OpenBLAS 0.3.31, SkylakeX kernels (OPENBLAS_CORETYPE unset)"`` or the like: NumPy's
    BLAS library, its version and kernels (``threadpoolctl``), and the kernel variables set."""
    import numpy as np
    from threadpoolctl import threadpool_info

    bundled = os.path.dirname(np.__file__) + ".libs"  # a wheel's own copy: numpy.libs/
    libs = [lib for lib in threadpool_info() if lib.get("user_api") == "blas"]
    mine = [lib for lib in libs if os.path.dirname(str(lib.get("filepath"))) == bundled]
    lib = (mine or libs or [{}])[0]
    name = {"openblas": "OpenBLAS", "mkl": "MKL", "blis": "BLIS"}.get(
        str(lib.get("internal_api")), str(lib.get("internal_api", "unknown BLAS")))
    arch = lib.get("architecture")
    setting = [f"{v}={os.environ[v]}" for v in KERNEL_VARS if os.environ.get(v)]
    return (f"NumPy's BLAS: {name} {lib.get('version') or ''}".rstrip()
            + (f", {arch} kernels" if arch else "")
            + f" ({', '.join(setting) if setting else 'OPENBLAS_CORETYPE unset'})")


if __name__ == "__main__":
    print(numpy_blas())
