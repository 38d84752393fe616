"""The largest enterprises: 300,000 employees, 20,000 trainings, 10 M trainings taken.

``python -m benchmarks enterprise [--small] [--users N --trainings N --taken N]``

Built directly at these shapes, with random factors and features: the synthetic
generator's oracle (employees x trainings of float64) would not fit at this size, and
what is measured here is time and memory, not quality. Employees are described as the
model describes them: a few attribute values and the trainings they took (history
features). Measured:

* precompute: every employee's candidates (``Recommender.for_feature_rows``, what
  ``precompute`` runs), seconds and the process's peak RSS (goal ≤ 60 s within 2 GB);
* the serving store: the model bundle and the table as precompute writes them, their
  sizes on storage;
* a fresh process as a serving instance starts: ``import function_app``, then the first
  ``GET /recommendations/{id}`` through the ASGI bridge the Functions host calls, the
  current version downloaded and loaded on the way; its seconds (goal ≤ 5 s) and the
  process's peak and resident memory afterwards (the serving cache, goal ≤ 1 GB);
* GET and POST latency in that process (median and 95th percentile over a sample);
* one epoch of the fit on a sample of employees (fold-out rows, as retrain fits),
  extrapolated to all of them, and said so: a full fit would take too long here.

The parse of a 10 M-row trainings-taken extract is ``python -m benchmarks parse``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from benchmarks.common import CACHE, REPO, MiB, header, log, parse_sizes, rss_peak, rss_reset

FULL = {"users": 300_000, "trainings": 20_000, "taken": 10_000_000, "factors": 64}
SMALL = {"users": 20_000, "trainings": 2_000, "taken": 400_000, "factors": 64}
ATTRIBUTES = 300  # distinct attribute values (departments, skills, languages, grades…)
PER_EMPLOYEE = 6  # attribute values per employee
EPOCH_SAMPLE = 20_000  # employees in the sampled epoch

_SERVE = """
import time
started = time.perf_counter()
import asyncio, json, statistics, sys
import function_app
import azure.functions as func

def get(path, body=None):
    request = func.HttpRequest("POST" if body else "GET", "http://localhost" + path,
        headers={"content-type": "application/json"}, params={}, route_params={},
        body=json.dumps(body).encode() if body else b"")
    return asyncio.run(function_app.app.middleware.handle_async(request))

employees = sys.argv[1:]
first = get("/recommendations/" + employees[0])
answered = time.perf_counter()
def status(key):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))
peak, resident = status("VmHWM:"), status("VmRSS:")
gets, posts = [], []
for employee in employees[1:]:
    t = time.perf_counter(); r = get("/recommendations/" + employee + "?n=10")
    gets.append(time.perf_counter() - t); assert r.status_code == 200, r.get_body()
for i in range(50):
    t = time.perf_counter()
    r = get("/recommendations", {"attributes": {"a": "v%d" % i}, "n": 10})
    posts.append(time.perf_counter() - t); assert r.status_code == 200, r.get_body()
q = lambda xs, p: sorted(xs)[int(p * (len(xs) - 1))]
print(json.dumps({"first": answered - started, "status": first.status_code, "peak": peak,
    "resident": resident, "get": [q(gets, .5), q(gets, .95)],
    "post": [q(posts, .5), q(posts, .95)]}))
"""


def shapes(sizes: dict[str, int], seed: int = 0) -> dict[str, Any]:
    """Employees' attribute and history rows, trainings taken, and random factors."""
    rng = np.random.default_rng(seed)
    n_users, n_items, n_taken = sizes["users"], sizes["trainings"], sizes["taken"]
    # Popularity falls off as in real catalogs (Zipf-like), so some trainings are common.
    weights = 1.0 / np.arange(1, n_items + 1) ** 0.8
    items = rng.choice(n_items, size=n_taken, p=weights / weights.sum()).astype(np.int32)
    users = rng.integers(0, n_users, n_taken).astype(np.int32)
    taken = sp.csr_matrix((np.ones(n_taken, np.float32), (users, items)), (n_users, n_items))
    taken.sum_duplicates()
    taken.data[:] = 1.0
    cols = rng.integers(0, ATTRIBUTES, (n_users, PER_EMPLOYEE)).ravel()
    rows = np.repeat(np.arange(n_users), PER_EMPLOYEE)
    attributes = sp.csr_matrix(
        (np.full(len(cols), 1.0 / PER_EMPLOYEE, np.float32), (rows, cols)), (n_users, ATTRIBUTES)
    )
    attributes.sum_duplicates()
    from shared.features import describe_employees

    scale = 1.0 / np.sqrt(sizes["factors"])
    return {
        "taken": taken,
        "features": describe_employees(attributes, taken),
        "user_embeddings": rng.normal(0, scale, (ATTRIBUTES + n_items, sizes["factors"])),
        "item_embeddings": rng.normal(0, scale, (n_items, sizes["factors"])),
    }


def bundle_of(sizes: dict[str, int], world: dict[str, Any]) -> Any:
    from shared.bundle import ModelBundle
    from shared.metadata import unevaluated
    from shared.settings import Config

    n_users, n_items = sizes["users"], sizes["trainings"]
    names = [f"a:v{i}" for i in range(ATTRIBUTES)] + [f"taken:t{i}" for i in range(n_items)]
    return ModelBundle(
        user_ids=np.asarray([f"u{i:06d}" for i in range(n_users)]),
        item_ids=np.asarray([f"t{i}" for i in range(n_items)]),
        item_titles=np.asarray([f"Training number {i}" for i in range(n_items)]),
        item_attributes=np.full((n_items, 1), "x"),
        user_feature_names=np.asarray(names),
        item_feature_names=np.asarray([f"id:t{i}" for i in range(n_items)]),
        user_feature_embeddings=world["user_embeddings"].astype(np.float32),
        user_feature_biases=np.zeros(len(names), np.float32),
        item_feature_embeddings=world["item_embeddings"].astype(np.float32),
        item_feature_biases=np.zeros(n_items, np.float32),
        user_features=world["features"],
        item_features=sp.identity(n_items, dtype=np.float32, format="csr"),
        taken=world["taken"],
        metadata=unevaluated(
            "20261203T000000Z-enterprise",
            ["x"],
            Config.from_dict(
                {
                    "contract": {"users": {"id": "id", "features": ["a"], "extra": []}},
                    "features": {"history": True},
                }
            ),
        ),
    )


def precompute_and_store(sizes: dict[str, int], folder: Path) -> dict[str, Any]:
    """Candidates for everyone, then the serving store written as precompute writes it."""
    from shared.layout import MODELS_POINTER, RECOMMENDATIONS_POINTER, json_bytes
    from shared.registry import write_version
    from shared.scoring import Recommender
    from shared.storage import LocalFolderStore
    from shared.table import RecommendationTable

    log("building the shapes (random factors and features)")
    world = shapes(sizes)
    bundle = bundle_of(sizes, world)
    recommender = Recommender(bundle)
    has_history = np.diff(world["taken"].indptr) > 0
    active = np.ones(sizes["trainings"], dtype=bool)
    log("precompute: every employee's candidates")
    rss_reset()
    started = time.perf_counter()
    items, scores = recommender.for_feature_rows(
        world["features"], has_history, 50, world["taken"], active, chunk_size=2048
    )
    seconds = time.perf_counter() - started
    peak = rss_peak()
    table = RecommendationTable(
        bundle.user_ids, items, scores, has_history, world["features"], world["taken"], active, {}
    )
    store = LocalFolderStore(folder)
    write_version(store, bundle)
    version = "20261203T000000Z-enterpr-000000"
    store.write(f"recommendations/{version}/top.npz", table.to_bytes())
    meta = {"version": version, "model_version": bundle.version, "data_version": "enterprise"}
    store.write(f"recommendations/{version}/meta.json", json_bytes(meta))
    store.write(MODELS_POINTER, json_bytes({"version": bundle.version}))
    store.write(RECOMMENDATIONS_POINTER, json_bytes(meta))
    sizes_on_disk = {
        name: sum(f.stat().st_size for f in (folder / name).rglob("*") if f.is_file())
        for name in ("models", "recommendations")
    }
    return {"seconds": seconds, "peak": peak, "stored": sizes_on_disk, "bundle": bundle}


def first_answer(folder: Path, employees: list[str]) -> dict[str, Any]:
    config = folder.parent / "enterprise-serving.toml"
    config.write_text(
        '[contract.users]\nid = "id"\nfeatures = ["a"]\nextra = []\n'
        "[features]\nhistory = true\n[serving]\nrefresh_seconds = 3600\n",
        encoding="utf-8",
    )
    env = {**os.environ, "TR_LOCAL_STORE": str(folder), "TR_CONFIG": str(config)}
    done = subprocess.run(
        [sys.executable, "-c", _SERVE, *employees],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def epoch_seconds(sizes: dict[str, int], world_bundle: Any) -> tuple[float, int]:
    """One epoch on the fold-out rows of a sample of employees; (seconds, rows)."""
    from lightfm import LightFM

    from shared.training import fold_out

    rng = np.random.default_rng(1)
    sample = np.sort(rng.choice(sizes["users"], min(EPOCH_SAMPLE, sizes["users"]), replace=False))
    taken = world_bundle.taken[sample]
    attributes = world_bundle.user_features[sample][:, :ATTRIBUTES]
    interactions, features, _ = fold_out(taken, taken, attributes, 4, 0)
    model = LightFM(no_components=sizes["factors"], loss="warp")
    started = time.perf_counter()
    model.fit_partial(
        interactions.tocoo(),
        user_features=features,
        item_features=world_bundle.item_features,
        epochs=1,
        num_threads=os.cpu_count() or 1,
    )
    return time.perf_counter() - started, int(taken.nnz)


def main(argv: Sequence[str] | None = None) -> int:
    sizes = parse_sizes(argv, SMALL, FULL)
    header(
        "enterprise",
        f"{sizes['users']:,} employees x {sizes['trainings']:,} trainings, "
        f"{sizes['taken']:,} trainings taken, {sizes['factors']} factors (random shapes)",
    )
    folder = CACHE / f"enterprise-{sizes['users']}-{sizes['trainings']}"
    made = precompute_and_store(sizes, folder)
    bundle = made["bundle"]
    employees = [
        str(bundle.user_ids[i]) for i in np.linspace(0, sizes["users"] - 1, 201, dtype=int)
    ]
    log("a fresh serving process: import, download, load, first answer, then GET/POST")
    served = first_answer(folder, employees)
    log("one epoch of the fit on a sample of employees")
    epoch, sampled = epoch_seconds(sizes, bundle)
    per_epoch = epoch * sizes["taken"] / max(sampled, 1)
    stored = made["stored"]
    lines = [
        f"precompute (every employee's 50 candidates)   {made['seconds']:8.1f} s   process peak "
        f"{(made['peak'] or 0) / MiB:,.0f} MiB",
        f"stored: model {stored['models'] / MiB:,.0f} MiB, recommendations "
        f"{stored['recommendations'] / MiB:,.0f} MiB",
        f"fresh instance, first answer (import, download, load) {served['first']:6.2f} s   "
        f"peak {served['peak'] / MiB:,.0f} MiB, resident {served['resident'] / MiB:,.0f} MiB",
        f"GET /recommendations/{{id}}  median {served['get'][0] * 1e3:6.2f} ms   "
        f"p95 {served['get'][1] * 1e3:6.2f} ms",
        f"POST /recommendations       median {served['post'][0] * 1e3:6.2f} ms   "
        f"p95 {served['post'][1] * 1e3:6.2f} ms",
        f"fit: one epoch over {sampled:,} trainings taken (a sample) {epoch:.1f} s; "
        f"extrapolated to {sizes['taken']:,}: {per_epoch:,.0f} s per epoch (not run whole)",
    ]
    targets = [
        ("precompute <= 60 s", made["seconds"] <= 60),
        ("precompute within 2 GB", (made["peak"] or 0) <= 2 * 1024 * MiB),
        ("serving process <= 1 GB resident", served["resident"] <= 1024 * MiB),
        ("first answer <= 5 s", served["first"] <= 5),
    ]
    print("\n".join(lines))
    for text, met in targets:
        print(f"target {text}: {'MET' if met else 'NOT MET'}")
    return 0 if all(met for _, met in targets) else 1
