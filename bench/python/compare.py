"""Time the Python originals on the data of shardflow's criterion benchmarks, on the
same machine, so that the README's ratios are measured, not assumed.

    cargo run --release -p shardflow-model --example bench_data -- /tmp/amounts.f64 10000000
    python3 -m venv /tmp/bench-venv && /tmp/bench-venv/bin/pip install -r bench/python/requirements.txt
    /tmp/bench-venv/bin/python bench/python/compare.py /tmp/amounts.f64

It times scikit-learn's BayesianGaussianMixture (the parameters shardflow reproduces,
one BLAS thread) fitting the first 100,000 and 1,000,000 values, and RDT's
ClusterBasedNormalizer (fitted on the first 100,000 values, as the criterion benchmark's
model is) transforming and reverse-transforming the first --rdt-rows values.
"""
import argparse
import json
import resource
import time
import warnings

import numpy as np
import pandas as pd
import rdt
import sklearn
from sklearn.mixture import BayesianGaussianMixture
from threadpoolctl import threadpool_limits

PARAMS = dict(
    n_components=10,
    weight_concentration_prior_type="dirichlet_process",
    weight_concentration_prior=0.001,
    max_iter=100,
    n_init=1,
    random_state=0,
)


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_fit(x):
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bgm = BayesianGaussianMixture(**PARAMS).fit(x.reshape(-1, 1))
    took = time.perf_counter() - start
    return {"rows": len(x), "seconds": round(took, 3), "n_iter": int(bgm.n_iter_),
            "valid_components": int((bgm.weights_ > 0.005).sum())}


def time_rdt(fit_values, values):
    from rdt.transformers.numerical import ClusterBasedNormalizer

    cbn = ClusterBasedNormalizer(max_clusters=10, weight_threshold=0.005)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cbn.fit(pd.DataFrame({"Amount": fit_values}), "Amount")
    data = pd.DataFrame({"Amount": values})
    start = time.perf_counter()
    encoded = cbn.transform(data)
    transform = time.perf_counter() - start
    start = time.perf_counter()
    cbn.reverse_transform(encoded)
    inverse = time.perf_counter() - start
    return {"rows": len(values), "transform_seconds": round(transform, 3), "reverse_seconds": round(inverse, 3),
            "peak_rss_mib": round(peak_rss_mib())}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="raw little-endian float64 values (examples/bench_data.rs)")
    parser.add_argument("--fit-rows", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--rdt-rows", type=int, default=10_000_000)
    args = parser.parse_args()
    x = np.fromfile(args.data, dtype="<f8")
    out = {"sklearn": sklearn.__version__, "rdt": rdt.__version__, "numpy": np.__version__, "fits": []}
    with threadpool_limits(limits=1):
        for n in args.fit_rows:
            out["fits"].append(time_fit(x[:n]))
            print(json.dumps(out["fits"][-1]), flush=True)
        if args.rdt_rows > 0:
            out["rdt_transform"] = time_rdt(x[:100_000], x[: args.rdt_rows])
            print(json.dumps(out["rdt_transform"]), flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
