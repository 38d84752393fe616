"""Hot swap under load: a new version goes live while uvicorn answers, and no answer mixes two.

A real server (``python -m shared serve``, a subprocess) over a local-folder store
answers a fixed number of requests at a fixed concurrency over loopback, and in the
middle of the run a new version is published. Every answer must be a 200 that comes
wholly from the old or wholly from the new version: its version triple is one of the
two, and its trainings are exactly what that version's stored table (GET) or model
(POST) gives. The expected answers are read from the store, not from the server.
"""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.error import URLError

import numpy as np
import pandas as pd
import pytest
from world import csv_bytes, drop, drop_all, small_config, small_data

from benchmarks.load import Report, Request, Result, run
from shared.layout import RECOMMENDATIONS_POINTER, read_pointer
from shared.pipeline import promote, retrain
from shared.registry import load_bundle, load_recommendations
from shared.scoring import NO_ITEM
from shared.serving import contract_of, load_snapshot, recommend_new
from shared.settings import Config
from shared.storage import LocalFolderStore

REPO = Path(__file__).resolve().parents[1]
# The gate is off: version B is trained first and must publish whatever its metrics.
CONFIG = small_config(gate={"enabled": False})
DATA = small_data()
REQUESTS = 3_000
POSTS = 200  # on-the-fly scoring costs ~4x a precomputed GET: a share, not the bulk
CONCURRENCY = 16
SWAP_AFTER = REQUESTS // 3  # answers served before version B is published
REFRESH_SECONDS = 0.2
MAX_LOAD_SECONDS = 40.0
SERVER_START_SECONDS = 30.0
NEW_EMPLOYEES: list[dict[str, Any]] = [
    {"ou": "development", "skills": ["python", "sql"], "language": "english", "grade": "G3"},
    {"ou": "sales", "skills": ["negotiation"], "career interests": "management"},
    {"ou": "finance", "skills": ["excel", "budgeting", "power bi"], "grade": "G2"},
    {"skills": ["docker", "javascript"], "career interests": "software engineering"},
    {"ou": "support", "language": "english"},
]

Triple = tuple[str, str, str]  # model, data and recommendations versions
Answer = list[tuple[str, str, float]]  # training id, title, score, in rank order


@dataclass(frozen=True)
class Version:
    """What a published version answers, read from the store."""

    triple: Triple
    known: dict[str, Answer]  # employee id -> the full precomputed list
    new: dict[int, Answer]  # index in NEW_EMPLOYEES -> the on-the-fly answer (n=10)


def triple_of(body: dict[str, Any]) -> Triple:
    return (body["model_version"], body["data_version"], body["recommendations_version"])


def read_version(store: LocalFolderStore, config: Config) -> Version:
    """The serving version's expected answers, from its stored table and model.

    GET answers are read from the table and the model's catalog directly (no serving
    code); POST answers need the scorer, run on a snapshot loaded for this pointer.
    """
    pointer, etag = read_pointer(store, RECOMMENDATIONS_POINTER)
    assert etag is not None
    table = load_recommendations(store, str(pointer["version"]))
    bundle = load_bundle(store, str(pointer["model_version"]))
    known: dict[str, Answer] = {}
    for employee, items, scores in zip(table.user_ids, table.items, table.scores, strict=True):
        known[str(employee)] = [
            (str(bundle.item_ids[i]), str(bundle.item_titles[i]), round(float(s), 6))
            for i, s in zip(items, scores, strict=True)
            if i != NO_ITEM
        ]
    snapshot = load_snapshot(store, pointer, etag)
    contract = contract_of(snapshot)
    new = {
        index: [
            (t.training_id, t.title, t.score)
            for t in recommend_new(snapshot, attributes, 10, contract).trainings
        ]
        for index, attributes in enumerate(NEW_EMPLOYEES)
    }
    triple = (
        str(pointer["model_version"]),
        str(pointer["data_version"]),
        str(pointer["version"]),
    )
    return Version(triple, known, new)


def rotated(users: pd.DataFrame, column: str, shift: int) -> pd.DataFrame:
    """The same employees with one attribute moved to other rows: different lists."""
    return users.assign(**{column: np.roll(users[column].to_numpy(), shift)})


def next_second() -> None:
    """Wait for the wall clock's next second.

    Model version names have a one-second resolution and a suffix from the trainings
    extract only, so two retrains within one second on the same trainings would share
    a name (see test_two_retrains_in_one_second_never_share_a_version).
    """
    time.sleep(1.0 - datetime.now(UTC).microsecond / 1e6 + 0.01)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(params=[1, 2], ids=["one worker", "two workers"])
def server(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[LocalFolderStore, str, str, int]]:
    """A store serving version A, B published but not serving, and uvicorn over it with
    one worker, or two (each with its own cache: instances scaled out).

    Yields the store, the server's base URL, model B's version and the workers.
    """
    workers: int = request.param
    store = LocalFolderStore(tmp_path / "store")
    drop_all(store, DATA, CONFIG)
    version_b = retrain(store, small_config(gate={"enabled": False}, model={"random_state": 1}))
    assert version_b.status == "published", version_b
    next_second()
    # A is trained on other employee attributes with another seed, and serves.
    drop(store, "users/users-a.csv", csv_bytes(rotated(DATA.users, "ou", 7)), CONFIG)
    version_a = retrain(store, small_config(gate={"enabled": False}, model={"random_state": 2}))
    assert version_a.status == "published", version_a
    assert version_a.version != version_b.version

    config_file = tmp_path / "serving.toml"
    config_file.write_text(f"[serving]\nrefresh_seconds = {REFRESH_SECONDS}\n", encoding="utf-8")
    port = free_port()
    log = tmp_path / "uvicorn.log"
    command = [sys.executable, "-m", "shared", "--store", str(store.root)]
    command += ["--config", str(config_file), "serve", "--port", str(port)]
    command += ["--workers", str(workers)]
    with log.open("wb") as out:
        # Output to a file, not a pipe: access lines of 3,000 requests would fill a pipe
        # nobody reads, and the server would block on it.
        process = subprocess.Popen(
            command, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                    assert response.status == 200
                break
            except (URLError, ConnectionError):
                assert process.poll() is None, log.read_text(errors="replace")
                assert time.monotonic() < deadline, "uvicorn did not answer in time"
                time.sleep(0.2)
        assert version_b.version is not None
        yield store, base, version_b.version, workers
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def workload(employees: list[str]) -> list[Request]:
    """GETs over every employee with n from 1 to 10, and POSTs of new employees, mixed."""
    rng = random.Random(20261129)
    requests = [
        Request.get(f"/recommendations/{employees[i % len(employees)]}?n={1 + i % 10}", tag="get")
        for i in range(REQUESTS - POSTS)
    ]
    requests += [
        Request.post_json(
            "/recommendations",
            {"attributes": NEW_EMPLOYEES[i % len(NEW_EMPLOYEES)], "n": 10},
            tag=f"post:{i % len(NEW_EMPLOYEES)}",
        )
        for i in range(POSTS)
    ]
    rng.shuffle(requests)
    return requests


def employee_of(result: Result) -> str:
    return result.request.path.partition("?")[0].rsplit("/", 1)[1]


def expected_answer(result: Result, version: Version) -> Answer:
    if result.request.tag == "get":
        n = int(result.request.path.partition("?")[2].removeprefix("n="))
        return version.known[employee_of(result)][:n]
    return version.new[int(result.request.tag.removeprefix("post:"))]


def test_a_version_published_under_load_is_served_whole_and_never_mixed(
    server: tuple[LocalFolderStore, str, str, int],
) -> None:
    store, base, version_b, workers = server
    old = read_version(store, CONFIG)
    employees = sorted(old.known)
    requests = workload(employees)

    served = 0
    swap_now = threading.Event()
    swapped: dict[str, Any] = {}

    def count(_: Result) -> None:
        nonlocal served
        served += 1
        if served == SWAP_AFTER:
            swap_now.set()

    def publish_b() -> None:
        # What production does: HR drops a changed employees extract, and a version is
        # promoted (here the earlier model B) with a precompute over the new extract.
        if not swap_now.wait(MAX_LOAD_SECONDS):
            return
        try:
            changed = rotated(rotated(DATA.users, "ou", 7), "skills", 3)
            drop(store, "users/users-b.csv", csv_bytes(changed), CONFIG)
            swapped["at"] = time.monotonic()
            swapped["result"] = promote(store, version_b, CONFIG)
            swapped["done"] = time.monotonic()
        except Exception as exc:  # reported by the main thread
            swapped["error"] = exc
            raise

    swapper = threading.Thread(target=publish_b, name="publish-b", daemon=True)
    swapper.start()
    report: Report = run(
        base, requests, CONCURRENCY, timeout=10.0, max_seconds=MAX_LOAD_SECONDS, on_result=count
    )
    swap_now.set()  # a run that ended early must not leave the thread waiting
    swapper.join(timeout=30)
    assert not swapper.is_alive(), "publishing version B did not finish in 30 s"
    assert "error" not in swapped, f"publishing version B failed: {swapped.get('error')!r}"
    new = read_version(store, CONFIG)
    versions = {old.triple: ("A", old), new.triple: ("B", new)}

    failures = report.failures()
    per_version: Counter[str] = Counter()
    mismatches: list[str] = []
    for result in report.results:
        if result.status != 200:
            continue
        body = result.json()
        if triple_of(body) not in versions:
            per_version["?"] += 1
            mismatches.append(f"#{result.index}: unknown versions {triple_of(body)}")
            continue
        name, version = versions[triple_of(body)]
        per_version[name] += 1
        got = [(t["training_id"], t["title"], t["score"]) for t in body["trainings"]]
        if got != expected_answer(result, version):
            mismatches.append(f"#{result.index} {result.request.path}: not version {name}'s")
        if result.request.tag == "get" and body["employee_id"] != employee_of(result):
            mismatches.append(f"#{result.index}: echoes another employee")

    print(
        f"\nhot swap: {report.served} requests served, {len(failures)} failed, "
        f"{per_version['A']} answers from version A {old.triple}, "
        f"{per_version['B']} from version B {new.triple}, {per_version['?']} from neither; "
        f"B published after {SWAP_AFTER} answers in "
        f"{swapped.get('done', 0) - swapped.get('at', 0):.2f} s\n{report.summary()}"
    )
    assert report.not_sent == 0, f"{report.not_sent} requests not sent in {MAX_LOAD_SECONDS} s"
    assert len(report.results) == REQUESTS
    assert not failures, [(r.index, r.status, r.error, r.body[:200]) for r in failures[:5]]
    assert new.triple != old.triple
    assert all(a != b for a, b in zip(old.triple, new.triple, strict=True)), (
        "model, data and recommendations versions should all change"
    )
    # The check means something only if the two versions answer differently.
    differing = sum(old.known[e] != new.known[e] for e in employees)
    assert differing > 0.9 * len(employees)
    assert old.new != new.new
    assert not mismatches, mismatches[:10]
    assert per_version["A"] > 0, "version A was never seen"
    assert per_version["B"] > 0, "version B was never seen: the swap came too late"

    if workers == 1:
        # One instance never goes back: a request sent after a B answer came back is B.
        first_b_done = min(
            r.started + r.latency for r in report.results if triple_of(r.json()) == new.triple
        )
        late_a = [
            r.index
            for r in report.results
            if r.started > first_b_done and triple_of(r.json()) == old.triple
        ]
        assert not late_a, f"{len(late_a)} requests sent after a B answer were answered by A"
    else:
        # Instances each check the pointer: once every one had its refresh after the
        # promote (at most REFRESH_SECONDS, and a load of a fraction of a second), none
        # answers A. Requests sent from then on, spread over the workers, are all B.
        # A worker refreshes on its next request once its check is due; while one of its
        # requests loads B, its others still answer A (by design). So: a first round
        # wakes every worker, and the round after it must be all B.
        time.sleep(max(0.0, swapped["done"] + 2 * REFRESH_SECONDS + 1.0 - time.monotonic()))
        woken = run(base, workload(employees)[:200], CONCURRENCY, timeout=10.0)
        assert not woken.failures()
        time.sleep(2 * REFRESH_SECONDS + 1.0)
        after = run(base, workload(employees)[:400], CONCURRENCY, timeout=10.0)
        assert not after.failures() and len(after.results) == 400
        late = [r.index for r in after.results if triple_of(r.json()) != new.triple]
        assert not late, f"{len(late)} requests sent after every worker refreshed were not B"


def test_two_retrains_in_one_second_never_share_a_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A published version is immutable, even when two retrains finish within one second.

    Version names are ``<UTC second>-<6 hex of the data fingerprint>``: a second model
    trained within the same second (another seed, a rollback candidate, two instances
    racing) would be written into the first one's folder, replacing a published
    model in place — what a reader loading it then sees is a mixture.
    """
    import shared.bundle
    import shared.pipeline

    frozen = datetime(2026, 11, 29, 10, 15, 0, tzinfo=UTC)

    class Frozen(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Frozen:
            return cls.fromtimestamp(frozen.timestamp(), tz)

    monkeypatch.setattr(shared.bundle, "datetime", Frozen)
    monkeypatch.setattr(shared.pipeline, "datetime", Frozen)
    store = LocalFolderStore(tmp_path / "store")
    drop_all(store, DATA, CONFIG)
    first = retrain(store, small_config(gate={"enabled": False}, model={"random_state": 1}))
    assert first.version is not None
    published = store.read(f"models/{first.version}/model.npz")
    second = retrain(store, small_config(gate={"enabled": False}, model={"random_state": 2}))
    assert store.read(f"models/{first.version}/model.npz") == published, (
        f"published model {first.version} was overwritten in place by {second.version}"
    )
    assert second.version != first.version
