"""Training-step speed of depthlab against PyTorch eager and JAX ``jit`` on the CPU.

One step = forward + loss + backward + optimizer update (plain SGD, no input gradient for the
first layer), float32 unless stated. Each framework's step is timed in blocks of steps, the
blocks of the three frameworks interleaved round after round in one process, so that a change
of the shared machine's load hits all three alike; the table gives each framework's median
time per step over the rounds with the range, and the ratio of medians.

Two settings, each in a child process of its own:
- ``one core``: the process is pinned to one core (``os.sched_setaffinity``, as ``taskset -c``)
  and every library runs one thread (JAX's thread flags do not bind XLA, the pin does);
- ``all cores``: no pin, every library with as many threads as there are cores (OpenMP told to
  sleep between operations, ``OMP_WAIT_POLICY=PASSIVE``, so that PyTorch's spinning workers do
  not steal the cores from the framework timed next). Here depthlab is timed twice: with its
  BLAS on all cores like the others, and as ``depthlab-auto``, under the thread count ``fit``
  chooses (:func:`depthlab.threads.choose_threads`: one thread when the step's largest product
  is below 2**24 multiply-adds, else the idle cores: the cores minus the load average).

Then, for depthlab: where the step's time goes (the matrix products replayed alone on the same
buffers, the elementwise work, and the rest: Python and call overhead), the float32 rate of every
product shape of the wide network with each BLAS at hand (NumPy's OpenBLAS, SciPy's BLAS,
PyTorch's ``mm`` on the same buffers, and where installed Intel's MKL, ``pip install mkl``, called
through ctypes, and BLIS, ``pip install blis``, with the code path each takes on this CPU) and
the share of the best rate that depthlab's step reaches,
and the cost of float64 against float32 (:func:`float64_cost`: CPU time on one core, at least 9
rounds, split into each kind of product, ``x.W``, ``xT.g``, ``g.WT``, and the rest of the step).

Usage: ``python benchmarks/engine_speed.py [--rounds 7] [--only one|all] [--no-jax]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # host_blas, beside this file
from host_blas import numpy_blas  # noqa: E402

CASES = [
    # name, sizes, activation, init, batch, steps per block
    ("784-100-100-100-10 sigmoid, batch 60", [784, 100, 100, 100, 10], "sigmoid",
     "glorot_uniform", 60, 200),
    ("20 ReLU layers of 256, batch 128", [256] + [256] * 20 + [10], "relu", "he_normal", 128,
     20),
    ("4 ReLU layers of 2048, batch 512", [2048] * 5 + [10], "relu", "he_normal", 512, 2),
]
FRAMEWORKS = ("depthlab", "torch", "jax")


# -- one training step per framework ------------------------------------------------------------


def _data(sizes, batch, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], batch)
    return x, y


def depthlab_step(sizes, activation, init, batch, dtype="float32", own_threads=False):
    """depthlab's step; ``own_threads``: under the BLAS thread count ``fit`` would choose."""
    import depthlab as dl
    from depthlab import accel
    from depthlab.threads import blas_threads, choose_threads

    accel.warm_up((dtype,))  # a long run's path (DEPTHLAB_ENGINE_KERNELS=numpy: NumPy)
    net = dl.mlp(sizes, activation=activation, init=init, seed=0, dtype=dtype)
    x, y = _data(sizes, batch, dtype)
    loss = dl.loss("cross_entropy")
    opt = dl.optimizer("sgd", net.parameters(), lr=1e-3)

    def steps_(steps: int) -> None:
        for _ in range(steps):
            out = net.forward(x, training=True)
            loss.forward(out, y)
            net.backward(loss.backward(), input_grad=False, copy=False)
            opt.step()

    if not own_threads:
        return steps_

    def run(steps: int) -> None:
        with blas_threads(choose_threads(sizes, batch)):  # decided per block, as fit does
            steps_(steps)

    return run


def torch_step(sizes, activation, init, batch, dtype="float32"):
    import torch

    torch.manual_seed(0)
    act = {"sigmoid": torch.nn.Sigmoid, "relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}[activation]
    layers: list = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(act())
    net = torch.nn.Sequential(*layers)
    xn, yn = _data(sizes, batch, "float32")
    x, y = torch.from_numpy(xn), torch.from_numpy(yn)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    lossf = torch.nn.CrossEntropyLoss()

    def run(steps: int) -> None:
        for _ in range(steps):
            opt.zero_grad(set_to_none=False)
            lossf(net(x), y).backward()
            opt.step()

    return run


def jax_step(sizes, activation, init, batch, dtype="float32"):
    import jax
    import jax.numpy as jnp

    act = {"sigmoid": jax.nn.sigmoid, "relu": jax.nn.relu, "tanh": jnp.tanh}[activation]
    rng = np.random.default_rng(0)
    params = [(jnp.asarray(rng.standard_normal((a, b)).astype("float32") / np.sqrt(a)),
               jnp.zeros((b,), jnp.float32)) for a, b in zip(sizes[:-1], sizes[1:])]
    xn, yn = _data(sizes, batch, "float32")
    x, y = jnp.asarray(xn), jnp.asarray(yn)

    def loss_fn(ps, x, y):
        h = x
        for i, (w, b) in enumerate(ps):
            h = h @ w + b
            if i < len(ps) - 1:
                h = act(h)
        logp = jax.nn.log_softmax(h)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    @jax.jit
    def step(ps, x, y):
        grads = jax.grad(loss_fn)(ps, x, y)  # no gradient w.r.t. x is requested
        return [(w - 1e-3 * gw, b - 1e-3 * gb) for (w, b), (gw, gb) in zip(ps, grads)]

    state = {"p": step(params, x, y)}  # compile
    jax.block_until_ready(state["p"])

    def run(steps: int) -> None:
        p = state["p"]
        for _ in range(steps):
            p = step(p, x, y)
        jax.block_until_ready(p)
        state["p"] = p

    return run


STEP_FNS = {"depthlab": depthlab_step, "torch": torch_step, "jax": jax_step}


def interleaved(fns: dict, steps: int, rounds: int,
                clock=time.perf_counter) -> dict[str, list[float]]:
    """Seconds per step of each function, one block of ``steps`` per round, the order of the
    functions rotated every round (after one warm-up block each). ``clock``: wall time by
    default; :func:`time.process_time` (CPU time) for a process pinned to one core, where the
    wall time of a block also counts the other processes sharing that core."""
    names = list(fns)
    for n in names:
        fns[n](max(1, steps // 4))
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names):] + names[:r % len(names)]:
            t = clock()
            fns[n](steps)
            out[n].append((clock() - t) / steps)
    return out


# -- where depthlab's step goes -----------------------------------------------------------------


def _best(fn, repeat: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


ELEMENTWISE_OPS = ("bias add", "activation forward", "activation backward", "loss",
                  "bias gradient", "SGD update")
"""The kinds of elementwise work of a step, as :func:`breakdown` times them one by one."""


def elementwise_ops(sizes, activation, batch, state: dict | None = None) -> dict:
    """One function per kind of elementwise work of a step (:data:`ELEMENTWISE_OPS`), each
    doing that work for every layer of the network on buffers of the step's shapes, through
    the engine's compiled kernels where its step runs them (:mod:`depthlab.accel`). The values
    stay those of a training step whatever the number of repeats: the bias added is negated
    after each add (``h`` moves by ``+b``, ``-b``, ...), the SGD step's sign alternates, and
    each activation backward first copies its gradient from a fixed array into a reused buffer
    (``np.copyto``, about 5 us for 128 x 256 float32: the step's backward takes the gradient
    fresh from a product instead; repeated in place, sigmoid's ``g a (1 - a)`` would shrink
    ``g`` into subnormals, which are slow). ``state``: a dict that receives the buffers
    (``h``: the layers' activations, ``w``, ``b``: the parameters)."""
    import depthlab as dl
    from depthlab import accel
    from depthlab.activations import get_activation

    rng = np.random.default_rng(0)
    ws = [rng.standard_normal((a, b)).astype(np.float32) for a, b in zip(sizes[:-1], sizes[1:])]
    gws = [(rng.standard_normal(w.shape) * 0.1).astype(np.float32) for w in ws]
    hs = [rng.standard_normal((batch, a)).astype(np.float32) for a in sizes]
    gs = [rng.standard_normal(h.shape).astype(np.float32) for h in hs]
    gbuf = [np.empty_like(h) for h in hs]
    bs = [(rng.standard_normal(b) * 0.1).astype(np.float32) for b in sizes[1:]]
    gbs = [np.empty_like(b) for b in bs]
    fn = get_activation(activation)
    loss = dl.loss("cross_entropy")
    y = rng.integers(0, sizes[-1], batch)
    k = accel.kernels()
    lr = [np.float32(1e-3)]
    hidden = range(1, len(sizes) - 1)
    if state is not None:
        state.update(h=hs, w=ws, b=bs)

    added = [b.copy() for b in bs]  # the SGD update below moves bs

    def bias_add():
        for h, b in zip(hs[1:], added):
            if k is None:
                h += b
            else:
                k.add_rows(h, b)
            np.negative(b, out=b)

    def act_forward():
        for i in hidden:
            fn.forward(hs[i])

    acts = [fn.forward(hs[i]) if i in hidden else None for i in range(len(sizes))]

    def act_backward():
        for i in hidden:
            np.copyto(gbuf[i], gs[i])
            fn.backward(hs[i], acts[i], gbuf[i])

    def loss_():
        loss.forward(hs[-1], y)
        loss.backward()

    def bias_grad():
        for g, gb in zip(gs[1:], gbs):
            if k is None:
                np.sum(g, axis=0, out=gb)
            else:
                k.column_sum(g, gb)

    def sgd_update():
        c = lr[0] = -lr[0]
        for p, d in zip(ws + bs, gws + gbs):
            if k is None:
                p -= c * d
            else:
                k.sub_scaled(p, d, c)

    return dict(zip(ELEMENTWISE_OPS, (bias_add, act_forward, act_backward, loss_, bias_grad,
                                      sgd_update)))


def breakdown(sizes, activation, batch, steps: int, rounds: int,
              one_core: bool = True) -> dict:
    """Split of one depthlab step: the matrix products alone on buffers of the step's shapes,
    each kind of elementwise work alone (:func:`elementwise_ops`: bias adds, activation
    forward and backward, softmax cross-entropy, bias sums, the SGD update), and the step
    itself, interleaved in blocks of ``steps`` over ``rounds`` rounds (medians; CPU time of the
    process when ``one_core``, else wall time); ``elementwise`` is the sum of the kinds
    (``ops``: each kind's median, seconds per step), the overhead (Python and call costs) is
    the remainder ``step - products - elementwise``."""
    rng = np.random.default_rng(0)
    ws = [rng.standard_normal((a, b)).astype(np.float32) for a, b in zip(sizes[:-1], sizes[1:])]
    hs = [rng.standard_normal((batch, a)).astype(np.float32) for a in sizes]
    gws = [np.empty_like(w) for w in ws]

    def products():
        for i, w in enumerate(ws):
            hs[i] @ w
            np.matmul(hs[i].T, hs[i + 1], out=gws[i])
            if i:
                hs[i + 1] @ w.T

    def repeat(fn):
        def run(k: int) -> None:
            for _ in range(k):
                fn()
        return run

    ops = elementwise_ops(sizes, activation, batch)
    fns = {"step": depthlab_step(sizes, activation, "he_normal", batch),
           "products": repeat(products), **{n: repeat(f) for n, f in ops.items()}}
    times = interleaved(fns, steps, rounds,
                        clock=time.process_time if one_core else time.perf_counter)
    med = {k: statistics.median(v) for k, v in times.items()}
    elementwise = sum(med[n] for n in ops)
    return {"step": med["step"], "products": med["products"], "elementwise": elementwise,
            "ops": {n: med[n] for n in ops},
            "overhead": max(0.0, med["step"] - med["products"] - elementwise)}


def products_by_kind(sizes, batch, dtype: str) -> dict:
    """One step's matrix products of each kind (``x.W``, ``xT.g``, ``g.WT``) as the engine
    calls them (NumPy's ``@``, ``np.matmul(x.T, g, out=W.grad)``), each layer on buffers of its
    own as in the step (its weights are not in cache when their turn comes): a function of a
    block of ``steps`` per kind."""
    rng = np.random.default_rng(0)
    ws = [rng.standard_normal((a, b)).astype(dtype) for a, b in zip(sizes[:-1], sizes[1:])]
    hs = [rng.standard_normal((batch, a)).astype(dtype) for a in sizes]
    gws = [np.empty_like(w) for w in ws]

    def block(one):
        def run(steps: int) -> None:
            for _ in range(steps):
                one()
        return run

    def xw():
        for i, w in enumerate(ws):
            hs[i] @ w

    def xtg():
        for i in range(len(ws)):
            np.matmul(hs[i].T, hs[i + 1], out=gws[i])

    def gwt():
        for i in range(1, len(ws)):  # no input gradient for the first layer
            hs[i + 1] @ ws[i].T

    return {"x.W": block(xw), "xT.g": block(xtg), "g.WT": block(gwt)}


def float64_cost(sizes, act, init, batch, steps: int, rounds: int, one_core: bool) -> dict:
    """float64 against float32: the step's time ratio, and where the float64 step's time
    beyond twice float32's goes: the ratio of each kind of product (:func:`products_by_kind`)
    and of the rest of the step (elementwise work, loss, Python), all interleaved in one run.
    Pinned to one core the blocks are timed in CPU time (the wall time of a block on a shared
    core counts the other processes' time slices; the float64 blocks, twice as long, are the
    likelier to be cut); on all cores in wall time (CPU time would count the BLAS threads'
    spinning)."""
    own = not one_core  # float64 against float32 as fit runs them
    fns = {}
    for dt in ("float32", "float64"):
        fns[f"step {dt}"] = depthlab_step(sizes, act, init, batch, dt, own)
        for kind, fn in products_by_kind(sizes, batch, dt).items():
            fns[f"{kind} {dt}"] = fn
    times = interleaved(fns, steps, rounds,
                        time.process_time if one_core else time.perf_counter)
    med = {k: statistics.median(v) for k, v in times.items()}
    steps32, steps64 = times["step float32"], times["step float64"]
    out = {"ratio": med["step float64"] / med["step float32"],
           "round_ratios": sorted(b / a for a, b in zip(steps32, steps64)),
           "clock": "cpu" if one_core else "wall", "rounds": rounds, "ms": {}}
    rest = {}
    for dt in ("float32", "float64"):
        prods = sum(med[f"{k} {dt}"] for k in ("x.W", "xT.g", "g.WT"))
        rest[dt] = med[f"step {dt}"] - prods
        out["ms"][dt] = {"step": med[f"step {dt}"] * 1e3, "products": prods * 1e3,
                         **{k: med[f"{k} {dt}"] * 1e3 for k in ("x.W", "xT.g", "g.WT")}}
    out["kinds"] = {k: med[f"{k} float64"] / med[f"{k} float32"]
                    for k in ("x.W", "xT.g", "g.WT")}
    out["products"] = out["ms"]["float64"]["products"] / out["ms"]["float32"]["products"]
    out["rest"] = rest["float64"] / rest["float32"] if rest["float32"] > 0 else float("nan")
    return out


def step_products(sizes, batch) -> list[tuple[str, int, int, int]]:
    """The matrix products of one step: (kind, m, k, n) for an (m x k)(k x n) product."""
    out = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        out.append(("x.W", batch, a, b))
        out.append(("xT.g", a, batch, b))
        if i:
            out.append(("g.WT", batch, b, a))
    return out


CBLAS_ROW_MAJOR, CBLAS_NO_TRANS, CBLAS_TRANS = 101, 111, 112
_MKL: list = []


def mkl_library():
    """Intel oneMKL's single dynamic library (``libmkl_rt``, the ``mkl`` wheel puts it in
    ``sys.prefix/lib``) through ctypes, or None where it is not installed; loaded once."""
    if not _MKL:
        import ctypes
        import ctypes.util
        import glob

        found = sorted(glob.glob(os.path.join(sys.prefix, "lib", "libmkl_rt.so*")))
        name = found[0] if found else ctypes.util.find_library("mkl_rt")
        lib = None
        if name:
            try:
                lib = ctypes.CDLL(name)
            except OSError:
                lib = None
        if lib is not None:
            ptr, i = ctypes.c_void_p, ctypes.c_int
            for fn, real in ((lib.cblas_sgemm, ctypes.c_float), (lib.cblas_dgemm, ctypes.c_double)):
                fn.argtypes = [i] * 6 + [real, ptr, i, ptr, i, real, ptr, i]
                fn.restype = None
        _MKL.append(lib)
    return _MKL[0]


def mkl_gemm(a, b, out, trans_a: bool = False, trans_b: bool = False):
    """``out = op(a) op(b)`` with ``op(m) = m.T`` where its flag is set, through MKL's row-major
    ``cblas_?gemm`` on the arrays' own (C-contiguous, float32 or float64) buffers: the
    transposes are flags, not copies. Returns ``out``."""
    lib = mkl_library()
    for m in (a, b, out):
        if not m.flags.c_contiguous or m.dtype != out.dtype or m.dtype not in (np.float32,
                                                                                np.float64):
            raise ValueError(f"mkl_gemm takes C-contiguous arrays of one dtype, got {m.dtype} "
                             f"(C-contiguous: {m.flags.c_contiguous})")
    m_, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    n = b.shape[0] if trans_b else b.shape[1]
    if out.shape != (m_, n) or (b.shape[1] if trans_b else b.shape[0]) != k:
        raise ValueError(f"mkl_gemm: shapes {a.shape}, {b.shape} -> {out.shape} do not match")
    gemm = lib.cblas_sgemm if out.dtype == np.float32 else lib.cblas_dgemm
    gemm(CBLAS_ROW_MAJOR, CBLAS_TRANS if trans_a else CBLAS_NO_TRANS,
         CBLAS_TRANS if trans_b else CBLAS_NO_TRANS, m_, n, k, 1.0, a.ctypes.data, a.shape[1],
         b.ctypes.data, b.shape[1], 0.0, out.ctypes.data, n)
    return out


def blas_paths() -> dict[str, str]:
    """Which code path the optional libraries take on this CPU: MKL's kernel library
    (``libmkl_def``: its generic path, ``libmkl_avx2``: AVX2; it picks the generic one on AMD
    processors) and BLIS's configuration (``generic``: its reference kernels)."""
    out = {}
    lib = mkl_library()
    if lib is not None:
        with open("/proc/self/maps") as fh:  # the kernel library loads at the first product
            kernels = sorted({line.rsplit("/", 1)[-1].strip() for line in fh
                              if "libmkl_" in line and "libmkl_vml" not in line
                              and any(t in line for t in ("_def.", "_avx", "_mc"))})
        out["mkl"] = ", ".join(kernels) or "not loaded yet"
    try:
        import ctypes

        import blis.cy
    except ImportError:
        return out
    cy = ctypes.CDLL(blis.cy.__file__)
    cy.bli_arch_string.restype = ctypes.c_char_p
    out["blis"] = cy.bli_arch_string(cy.bli_arch_query_id()).decode()
    return out


def product_calls(kind: str, m: int, k: int, n: int, dtype="float32", seed: int = 0) -> dict:
    """One product of the step, ``kind`` ``x.W``, ``xT.g`` or ``g.WT`` of an (m x k)(k x n)
    shape, on buffers in the layouts the step holds them in (``x``: (batch, fan_in), ``g``:
    (batch, fan_out), ``W``: (fan_in, fan_out)), as each BLAS at hand computes it: NumPy's
    ``matmul`` (into a preallocated ``out``), SciPy's ``?gemm`` (on the transposed views, its
    Fortran order), ``torch.mm`` (into the same ``out``), MKL's ``cblas_?gemm`` and BLIS's
    ``blis.py.gemm`` (float32) with transpose flags, where installed. Each call returns the
    (m x n) product (for SciPy a transposed view of its result)."""
    from scipy.linalg import blas

    rng = np.random.default_rng(seed)
    sgemm = blas.sgemm if np.dtype(dtype) == np.float32 else blas.dgemm
    shapes = {"x.W": ((m, k), (k, n)), "xT.g": ((k, m), (k, n)), "g.WT": ((m, k), (n, k))}
    sa, sb = shapes[kind]
    a, b = rng.standard_normal(sa).astype(dtype), rng.standard_normal(sb).astype(dtype)
    out = np.empty((m, n), dtype)
    ta, tb = kind == "xT.g", kind == "g.WT"
    opa, opb = (a.T if ta else a), (b.T if tb else b)
    calls = {"numpy": lambda: np.matmul(opa, opb, out=out),
             # (op(a) op(b))^T = op(b)^T op(a)^T: SciPy's Fortran-order result, transposed back
             "scipy": lambda: sgemm(1.0, b.T, a.T, trans_a=int(tb), trans_b=int(ta)).T}
    try:
        import torch
    except ImportError:  # pragma: no cover
        torch = None
    if torch is not None:
        t_a, t_b, t_out = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(out)
        t_opa, t_opb = (t_a.T if ta else t_a), (t_b.T if tb else t_b)
        calls["torch"] = lambda: torch.mm(t_opa, t_opb, out=t_out).numpy()
    if mkl_library() is not None:
        calls["mkl"] = lambda: mkl_gemm(a, b, out, ta, tb)
    if np.dtype(dtype) == np.float32:  # blis.py's float64 gemm sizes its output ignoring trans
        try:
            import blis.py
        except ImportError:
            pass
        else:
            # beta=0: blis.py.gemm's default beta=1 adds the product to what out holds
            calls["blis"] = lambda: blis.py.gemm(a, b, out=out, trans1=ta, trans2=tb, beta=0.0)
    return calls


LIBRARIES = ("numpy", "scipy", "torch", "mkl", "blis")


def best_products(sizes, batch, rows: list[dict]):
    """One step's matrix products, each with the library that was fastest on its shape in
    ``rows`` (:func:`shape_rates`), on buffers of the step's shapes and layouts: the floor a
    step doing nothing but its products at the machine's best rate would reach."""
    best = {(r["kind"], r["shape"]): max((lib for lib in LIBRARIES if lib in r),
                                         key=lambda lib: r[lib]) for r in rows}
    calls = []
    for i, (kind, m, k, n) in enumerate(step_products(sizes, batch)):
        lib = best[(kind, f"({m}x{k})({k}x{n})")]
        calls.append(product_calls(kind, m, k, n, seed=i)[lib])

    def run(steps: int) -> None:
        for _ in range(steps):
            for c in calls:
                c()

    return run


def shape_rates(sizes, batch, reps: int) -> list[dict]:
    """GFLOP/s of each distinct product shape with every BLAS at hand (:func:`product_calls`:
    NumPy, SciPy's BLAS, torch.mm, MKL and BLIS where installed), on the same float32 buffers
    in the layouts the step holds them in."""
    rows = []
    for kind, m, k, n in dict.fromkeys(step_products(sizes, batch)):
        flops = 2.0 * m * k * n
        rates = {lib: flops / _best(f, reps) / 1e9
                 for lib, f in product_calls(kind, m, k, n).items()}
        rows.append({"kind": kind, "shape": f"({m}x{k})({k}x{n})", "flops": flops,
                     "count": step_products(sizes, batch).count((kind, m, k, n)), **rates})
    return rows


# -- child: one setting --------------------------------------------------------------------------


def child(cores: str, rounds: int, use_jax: bool) -> dict:
    nthreads = 1 if cores == "one" else (os.cpu_count() or 1)
    import torch

    torch.set_num_threads(nthreads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(nthreads)
    res: dict = {"cores": cores, "threads": nthreads, "cases": []}
    frameworks = [f for f in FRAMEWORKS if use_jax or f != "jax"]
    for name, sizes, act, init, batch, steps in CASES:
        fns = {f: STEP_FNS[f](sizes, act, init, batch) for f in frameworks}
        if cores == "all":
            fns = {"depthlab": fns.pop("depthlab"),
                   "depthlab-auto": depthlab_step(sizes, act, init, batch, own_threads=True),
                   **fns}
        times = interleaved(fns, steps, rounds)
        # at least 9 rounds: the ratio of two medians of 3 wall-time rounds moved by +-0.3
        f64 = float64_cost(sizes, act, init, batch, steps, max(9, rounds), cores == "one")
        case = {"name": name, "times": times, "float64_ratio": f64["ratio"], "float64": f64,
                "breakdown": breakdown(sizes, act, batch, steps, max(5, rounds),
                                       cores == "one")}
        if sizes[1] == 2048:
            case["shapes"] = shape_rates(sizes, batch, reps=3)
            case["blas_paths"] = blas_paths()
            # the step against its products at the best rate per shape, interleaved
            floor = interleaved({"depthlab": depthlab_step(sizes, act, init, batch),
                                 "products": best_products(sizes, batch, case["shapes"])},
                                steps, max(3, rounds // 2))
            case["best_rate_share"] = (statistics.median(floor["products"]) /
                                       statistics.median(floor["depthlab"]))
        res["cases"].append(case)
    return res


# -- parent: print ---------------------------------------------------------------------------------


def _ms(v: float) -> str:
    return f"{v * 1e3:.3f}"


def report(res: dict) -> None:
    print(f"\n## {res['cores']} core(s), {res['threads']} thread(s): ms per step, median "
          f"(min-max) over rounds")
    fws = list(res["cases"][0]["times"])
    head = f"{'network':38s}" + "".join(f"{f:>24s}" for f in fws)
    head += "".join(f"{f + '/depthlab':>16s}" for f in fws[1:])
    print(head)
    for c in res["cases"]:
        med = {f: statistics.median(t) for f, t in c["times"].items()}
        line = f"{c['name']:38s}"
        for f in fws:
            t = c["times"][f]
            line += f"{_ms(med[f]):>9s} ({_ms(min(t))}-{_ms(max(t))})".rjust(24)
        line += "".join(f"{med[f] / med['depthlab']:15.2f}x" for f in fws[1:])
        print(line)
    if "depthlab-auto" in fws:
        print("(depthlab-auto: depthlab under the BLAS thread count fit chooses, "
              "depthlab.threads.choose_threads)")
    print("\ndepthlab's step (medians of interleaved rounds), where the time goes; "
          "float64 / float32:")
    for c in res["cases"]:
        b = c["breakdown"]
        print(f"  {c['name']:38s} step {_ms(b['step'])} ms = products {_ms(b['products'])} + "
              f"elementwise {_ms(b['elementwise'])} + overhead {_ms(b['overhead'])}; "
              f"float64 {c['float64_ratio']:.2f}x")
        if "ops" in b:
            print("    elementwise, ms per step: " + ", ".join(
                f"{n} {_ms(t)}" for n, t in b["ops"].items()))
    print("\nfloat64 / float32 (medians of interleaved rounds, "
          f"{res['cases'][0]['float64']['clock']} time): the step, each kind of product as the "
          "step calls it, the rest of the step")
    for c in res["cases"]:
        f = c["float64"]
        rr = f["round_ratios"]
        print(f"  {c['name']:38s} step {f['ratio']:.2f}x (rounds {rr[0]:.2f}-{rr[-1]:.2f}) = "
              f"products {f['products']:.2f}x ("
              + ", ".join(f"{k} {v:.2f}x" for k, v in f["kinds"].items())
              + f"; {f['ms']['float32']['products']:.3f} -> {f['ms']['float64']['products']:.3f}"
              f" ms) + rest {f['rest']:.2f}x")
    for c in res["cases"]:
        if "shapes" not in c:
            continue
        libs = [k for k in LIBRARIES if k in c["shapes"][0]]
        paths = "".join(f"; {k}: {v}" for k, v in c.get("blas_paths", {}).items())
        print(f"\n  {c['name']}: GFLOP/s per product shape ({', '.join(libs)}{paths})")
        for r in c["shapes"]:
            print(f"    {r['kind']:5s} {r['shape']:28s} x{r['count']}: "
                  + "  ".join(f"{k} {r[k]:6.1f}" for k in libs))
        print(f"    the step's products, each shape with its fastest library, interleaved with "
              f"depthlab's step: depthlab reaches {100 * c['best_rate_share']:.0f}% of that "
              f"rate (goal >= 90%)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--only", choices=("one", "all"))
    ap.add_argument("--no-jax", action="store_true")
    ap.add_argument("--json", help="also write the raw results (both settings) to this file")
    ap.add_argument("--child", choices=("one", "all"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        if args.child == "one":
            os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        json.dump(child(args.child, args.rounds, not args.no_jax), sys.stdout)
        return
    import importlib.util
    import platform

    if not args.no_jax and importlib.util.find_spec("jax") is None:
        print("jax is not installed (pip install -e '.[bench]'); timing without it")
        args.no_jax = True
    load_before = os.getloadavg()
    print(f"depthlab engine speed: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, NumPy {np.__version__}")
    blas = numpy_blas()
    print(blas)
    results = {}
    for cores in ("one", "all") if args.only is None else (args.only,):
        n = "1" if cores == "one" else str(os.cpu_count() or 1)
        env = {**os.environ, "OMP_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n,
               "MKL_NUM_THREADS": n, "OMP_WAIT_POLICY": "PASSIVE",
               "XLA_FLAGS": ("--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
                             if cores == "one" else "")}
        cmd = [sys.executable, __file__, "--child", cores, "--rounds", str(args.rounds)]
        if args.no_jax:
            cmd.append("--no-jax")
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
        results[cores] = json.loads(out.stdout)
        report(results[cores])
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"cores": os.cpu_count(), "numpy": np.__version__, "blas": blas,
                       "load_before": load_before, "load_after": os.getloadavg(),
                       "results": results}, fh)


if __name__ == "__main__":
    main()
