"""``compare(executor=...)``: serial, a process pool and Dask give the same bits.

Six symbols (three equities, three crypto) x 3,000 synthetic daily bars, in two universes: one
timeline (vectorbt ``from_orders``) and mixed calendars (equities on business days: the
``from_order_func`` engine). Every run is compared with the serial one: the stats table exactly,
every equity curve byte for byte. Also: one router and one session per model per worker, a
killed worker's shard retried, a data failure reported with its symbols while the rest
returns, and a scheduler + two workers started from the command line. Training on the same
executors writes the same ONNX bytes and model card as in this process.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from modelyard.config import load_config
from modelyard.config.schema import RoutingConfig
from modelyard.scale import (
    ShardFailure,
    gather_worker_state,
    local_cluster,
    shard_size_for,
)
from modelyard.strategies.compare import Comparison, compare

distributed = pytest.importorskip("distributed")

EQUITIES = ("AAPL", "MSFT", "IBM")
CRYPTO = ("BTC/USD", "ETH/USD", "SOL/USD")
SYMBOLS = (*EQUITIES, *CRYPTO)
N_BARS = 3_000
DASK = Path(sys.executable).parent / "dask"


def _walk(index: pd.DatetimeIndex, seed: int, price: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = len(index)
    close = price * np.exp(np.cumsum(rng.normal(0.0003, 0.015, n)))
    open_ = np.r_[price, close[:-1]] * np.exp(rng.normal(0.0, 0.002, n))
    spread = np.abs(rng.normal(0.0, 0.004, n)) * close
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) + spread,
            "low": np.minimum(open_, close) - spread,
            "close": close,
            "volume": rng.lognormal(10.0, 1.0, n),
        },
        index=index,
    )


def make_universe(kind: str, symbols: tuple[str, ...] = SYMBOLS) -> dict[str, pd.DataFrame]:
    days = pd.date_range("2010-01-01", periods=N_BARS, freq="D", tz="UTC", name="timestamp")
    weekdays = pd.bdate_range("2010-01-01", periods=N_BARS, tz="UTC", name="timestamp")
    out = {}
    for k, symbol in enumerate(symbols):
        crypto = "/" in symbol
        index = days if kind == "aligned" or crypto else weekdays
        out[symbol] = _walk(index, seed=100 + k, price=30_000.0 if crypto else 100.0)
    return out


UNIVERSES = {kind: make_universe(kind) for kind in ("aligned", "mixed")}
_SERIAL: dict[str, Comparison] = {}


def serial(kind: str) -> Comparison:
    if kind not in _SERIAL:
        _SERIAL[kind] = compare(list(SYMBOLS), bars=UNIVERSES[kind])
    return _SERIAL[kind]


def assert_identical(got: Comparison, want: Comparison) -> None:
    """Same tables exactly, same curves byte for byte, same routes and predictions."""
    assert got.failures == ()
    assert got.symbols == want.symbols
    pd.testing.assert_frame_equal(got.table, want.table, check_exact=True)
    for name in ("equity", "class_equity", "symbol_equity"):
        a, b = getattr(got, name), getattr(want, name)
        assert list(a) == list(b), name
        for key in b:
            assert a[key].to_numpy().tobytes() == b[key].to_numpy().tobytes(), (name, key)
            assert a[key].index.equals(b[key].index), (name, key)
    for variant in want.variants:
        pd.testing.assert_frame_equal(
            got.results[variant].orders, want.results[variant].orders, check_exact=True
        )
    assert got.routes == want.routes
    assert got.predictions_sha256 == want.predictions_sha256
    assert got.config == want.config


# --- test-only shard hooks (module level: workers import them by name) ---------------------
def crash_once(marker: str, stage: str, shard: int, symbols: tuple[str, ...]) -> None:
    """Kill the worker process on the first attempt of shard 0 of ``stage`` only."""
    if shard != 0 or stage != "signals":
        return
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os._exit(17)


def crash_always(target: str, stage: str, shard: int, symbols: tuple[str, ...]) -> None:
    if stage == "signals" and target in symbols:
        os._exit(17)


# --- fixtures ------------------------------------------------------------------------------
def _forkserver_pool(n: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("forkserver"))


@pytest.fixture(scope="module", autouse=True)
def no_leaked_processes() -> Iterator[None]:
    """Torn down last: every pool and cluster this module started has stopped its processes."""
    before = {p.pid for p in multiprocessing.active_children()}
    yield
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = [p for p in multiprocessing.active_children() if p.pid not in before]
        if not left:
            break
        time.sleep(0.1)
    assert left == []


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    with _forkserver_pool(2) as executor:
        yield executor


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    """A real 2-worker process cluster (tuned and warmed); the client closes first."""
    with local_cluster(n_workers=2) as cluster, distributed.Client(cluster) as client:
        yield client


def _worker_setup() -> dict[str, Any]:
    import dask
    import vectorbt.portfolio.nb as nb

    return {
        "malloc_trim": os.environ.get("MALLOC_TRIM_THRESHOLD_"),
        "omp": os.environ.get("OMP_NUM_THREADS"),
        "profile": dask.config.get("distributed.worker.profile.enabled"),
        "flex_compiled": len(nb.flex_simulate_nb.signatures),
    }


def test_local_cluster_is_tuned_and_warm(dask_client: Any) -> None:
    setups = dask_client.run(_worker_setup)
    assert len(setups) == 2
    for setup in setups.values():
        assert setup["malloc_trim"] is None
        assert setup["omp"] == "1"
        assert setup["profile"] is False
        assert setup["flex_compiled"] >= 2  # from_order_func callbacks, both array layouts


# --- identical results ---------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["aligned", "mixed"])
@pytest.mark.parametrize("size", [1, 4])
def test_serial_shards_equal_one_shard(kind: str, size: int) -> None:
    got = compare(list(SYMBOLS), bars=UNIVERSES[kind], shard_size=size)
    assert_identical(got, serial(kind))
    assert serial(kind).config["vectorbt_engine"] == (
        "orders" if kind == "aligned" else "order_func"
    )


@pytest.mark.parametrize("kind", ["aligned", "mixed"])
@pytest.mark.parametrize("size", [1, 4])
def test_threads_equal_serial(kind: str, size: int) -> None:
    """Threads share the process (one cached router set, one ONNX session per model, run
    from several threads at once) and give the serial result to the last bit."""
    got = compare(
        list(SYMBOLS), bars=UNIVERSES[kind], executor="threads", workers=2, shard_size=size
    )
    assert_identical(got, serial(kind))


@pytest.mark.parametrize("kind", ["aligned", "mixed"])
@pytest.mark.parametrize("size", [1, 4])
def test_process_pool_equals_serial(pool: ProcessPoolExecutor, kind: str, size: int) -> None:
    stages: list[tuple[str, int, int]] = []
    got = compare(
        list(SYMBOLS),
        bars=UNIVERSES[kind],
        executor=pool,
        shard_size=size,
        progress=lambda stage, done, total: stages.append((stage, done, total)),
    )
    assert_identical(got, serial(kind))
    n_shards = -(-len(SYMBOLS) // size)
    # signals: one task per shard; the accounts (simulate): one per variant on 2 workers
    for stage, total in (("signals", n_shards), ("simulate", 2)):
        seen = [(d, t) for s, d, t in stages if s == stage]
        assert seen == [(k, total) for k in range(total + 1)], stage


@pytest.mark.parametrize("kind", ["aligned", "mixed"])
@pytest.mark.parametrize("size", [1, 4])
def test_dask_cluster_equals_serial(dask_client: Any, kind: str, size: int) -> None:
    got = compare(list(SYMBOLS), bars=UNIVERSES[kind], executor=dask_client, shard_size=size)
    assert_identical(got, serial(kind))


def _where() -> str:
    return str(distributed.get_worker().address)


def test_dask_runner_moves_data_directly_and_spreads_small_batches(dask_client: Any) -> None:
    """On a cluster of this machine results and shared values skip the scheduler's relay
    (unless the client says otherwise); a batch of one call per worker runs one per worker,
    and an argument the calls share is sent to every worker once."""
    from modelyard.scale.executors import _on_this_machine, _Shared, resolve_executor

    with resolve_executor(dask_client) as runner:
        assert runner.direct
        workers = list(dask_client.nthreads())
        for _ in range(3):
            where = runner.map(_where, [(), ()], name="where", done=lambda d, t: None)
            assert where == workers
        shared = np.arange(5.0)
        sums = runner.map(np.sum, [(shared,), (shared,)], name="sum", done=lambda d, t: None)
        assert sums == [10.0, 10.0]
        future = _Shared(runner, shared).argument()
        assert isinstance(future, distributed.Future)
        assert set(dask_client.who_has(future)[future.key]) == set(workers)
    address = dask_client.scheduler.address
    with (
        distributed.Client(address, direct_to_workers=False) as relayed,
        resolve_executor(relayed) as runner,
    ):
        assert not runner.direct  # the client's word wins
    assert not _on_this_machine("tcp://10.255.255.1:8786")
    assert _on_this_machine("tcp://127.0.0.1:8786")


def test_workers_hold_one_router_and_one_session_per_model(
    pool: ProcessPoolExecutor, dask_client: Any
) -> None:
    """After several runs (both variants, 6 one-symbol shards each): per worker process one
    cached router set (two variant routers on one registry), each model loaded once."""
    for executor in (pool, dask_client):
        for _ in range(2):
            compare(list(SYMBOLS), bars=UNIVERSES["aligned"], executor=executor, shard_size=1)
        states = gather_worker_state(executor)
        assert len(states) == 2
        served = [s for s in states.values() if s["routers"]]
        assert served, states
        assert sum(s["shards"] for s in served) >= 2 * len(SYMBOLS)  # 2 runs x 6 shards
        for state in states.values():
            assert state["routers"] <= 1
            assert state["builds"] <= 1, state  # one config so far: built once per process
            assert all(n == 1 for n in state["model_loads"].values()), state
        for state in served:
            assert state["variant_routers"] == 2
            assert set(state["model_loads"]) == {"universal_v1", "equities_v1", "crypto_v1"}
            assert state["sessions"] == 3


def test_symbol_ic_does_not_depend_on_the_blas_thread_count() -> None:
    """Regression: a multi-threaded OpenBLAS dot sums in another order, so the per-symbol IC of
    a long series differed in the last bits between the driver (all cores) and a Dask worker
    (``OPENBLAS_NUM_THREADS=1``). Shards now run BLAS on one thread wherever they run."""
    from threadpoolctl import threadpool_limits

    index = pd.date_range("2010-01-01", periods=20_000, freq="1h", tz="UTC", name="timestamp")
    bars = {"BTC/USD": _walk(index, 1, 30_000.0), "ETH/USD": _walk(index, 2, 2_000.0)}
    with threadpool_limits(limits=1, user_api="blas"):
        one = compare(list(bars), bars=bars)
    with threadpool_limits(limits=4, user_api="blas"):
        many = compare(list(bars), bars=bars)
    symbol_rows = [t[t["level"] == "symbol"] for t in (one.table, many.table)]
    pd.testing.assert_frame_equal(*symbol_rows, check_exact=True)


# --- failures ------------------------------------------------------------------------------
def test_killed_pool_worker_shard_is_retried(tmp_path: Path) -> None:
    hook = functools.partial(crash_once, str(tmp_path / "crashed"))
    with _forkserver_pool(2) as executor:
        got = compare(
            list(SYMBOLS),
            bars=UNIVERSES["aligned"],
            executor=executor,
            shard_size=2,
            _shard_hook=hook,
        )
    assert (tmp_path / "crashed").exists()  # the first attempt did die
    assert_identical(got, serial("aligned"))


def test_killed_dask_worker_shard_is_retried(dask_client: Any, tmp_path: Path) -> None:
    pids = {s["pid"] for s in gather_worker_state(dask_client).values()}
    hook = functools.partial(crash_once, str(tmp_path / "crashed"))
    got = compare(
        list(SYMBOLS),
        bars=UNIVERSES["aligned"],
        executor=dask_client,
        shard_size=2,
        _shard_hook=hook,
    )
    assert (tmp_path / "crashed").exists()
    assert_identical(got, serial("aligned"))
    dask_client.wait_for_workers(2, timeout=60)
    after = {s["pid"] for s in gather_worker_state(dask_client).values()}
    assert len(after - pids) == 1  # the nanny replaced the dead worker


@pytest.mark.slow
def test_shard_that_keeps_killing_its_worker_is_listed_and_the_rest_returns() -> None:
    hook = functools.partial(crash_always, "IBM")
    with _forkserver_pool(2) as executor:
        got = compare(
            list(SYMBOLS),
            bars=UNIVERSES["aligned"],
            executor=executor,
            shard_size=3,
            retries=1,
            _shard_hook=hook,
        )
    (failure,) = got.failures
    assert failure.symbols == EQUITIES
    assert (failure.stage, failure.error, failure.attempts) == ("signals", "WorkerLost", 2)
    assert got.symbols == CRYPTO
    assert_identical(_without_failures(got), compare(list(CRYPTO), bars=UNIVERSES["aligned"]))


def _without_failures(c: Comparison) -> Comparison:
    from dataclasses import replace

    return replace(c, failures=())


def _strict_universe() -> tuple[Any, dict[str, pd.DataFrame], list[str]]:
    """Strict routing and an option symbol whose model is not shipped: the asset-specific
    variant raises RoutingError for it (a modelyard error, not a crash)."""
    config = load_config(None)
    config = config.model_copy(update={"routing": RoutingConfig(strict=True)})
    option = "SPY240119C00450000"
    names = [*SYMBOLS[:4], option, SYMBOLS[5]]
    bars = make_universe("aligned", tuple(names))
    return config, bars, names


@pytest.mark.parametrize("where", ["serial", "pool"])
def test_data_failure_is_reported_with_its_symbols(where: str, pool: ProcessPoolExecutor) -> None:
    config, bars, names = _strict_universe()
    executor = pool if where == "pool" else None
    got = compare(names, bars=bars, config=config, executor=executor, shard_size=2)
    (failure,) = got.failures
    assert isinstance(failure, ShardFailure)
    assert failure.symbols == ("SPY240119C00450000", "SOL/USD")
    assert (failure.shard, failure.stage, failure.error) == (2, "signals", "RoutingError")
    assert "SPY240119C00450000" in failure.message
    assert "SPY240119C00450000" in failure.describe()
    assert got.symbols == SYMBOLS[:4]
    # what returns is exactly the comparison of the symbols that did not fail
    rest = compare(list(SYMBOLS[:4]), bars=bars, config=config)
    assert_identical(_without_failures(got), rest)


def test_every_shard_failing_raises() -> None:
    config, bars, _ = _strict_universe()
    from modelyard.errors import DataError

    with pytest.raises(DataError, match="SPY240119C00450000"):
        compare(["SPY240119C00450000"], bars=bars, config=config)


# --- executors -----------------------------------------------------------------------------
def test_executor_specs_are_checked() -> None:
    with pytest.raises(ValueError, match="Did you mean 'processes'"):
        compare(list(SYMBOLS), bars=UNIVERSES["aligned"], executor="process")
    with pytest.raises(ValueError, match="executor must be"):
        compare(list(SYMBOLS), bars=UNIVERSES["aligned"], executor=3)
    with pytest.raises(ValueError, match="workers"):
        compare(list(SYMBOLS), bars=UNIVERSES["aligned"], workers=2)
    with pytest.raises(ValueError, match="shard_size"):
        compare(list(SYMBOLS), bars=UNIVERSES["aligned"], shard_size=0)
    assert [shard_size_for(n, w) for n, w in ((6, 1), (6, 2), (40, 2), (1, 8))] == [6, 2, 10, 1]
    # at most about SHARD_ROWS rows a shard: 100 symbols x 100k bars -> 20 symbols
    assert shard_size_for(100, 1, n_rows=10_000_000) == 20
    assert shard_size_for(100, 2, n_rows=10_000_000) == 20
    assert shard_size_for(40, 1, n_rows=800_000) == 40
    assert shard_size_for(100, 1, 50, n_rows=10_000_000) == 50


@pytest.mark.slow
def test_processes_string_starts_and_stops_its_own_pool() -> None:
    before = {p.pid for p in multiprocessing.active_children()}
    got = compare(
        list(SYMBOLS), bars=UNIVERSES["aligned"], executor="processes", workers=2, shard_size=3
    )
    assert_identical(got, serial("aligned"))
    assert {p.pid for p in multiprocessing.active_children()} <= before


@pytest.mark.slow
def test_dask_string_starts_a_local_cluster() -> None:
    got = compare(list(SYMBOLS), bars=UNIVERSES["mixed"], executor="dask", workers=2)
    assert_identical(got, serial("mixed"))


@pytest.fixture
def cli_cluster(tmp_path: Path) -> Iterator[str]:
    """``dask scheduler`` and two ``dask worker`` processes, started from the command line."""
    if not DASK.exists():
        pytest.skip(f"no dask executable at {DASK}")
    scheduler_file = tmp_path / "scheduler.json"
    F = str(scheduler_file)  # noqa: N806
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_TRIM_THRESHOLD_"}
    env["DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED"] = "False"
    common = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [
        subprocess.Popen(
            [str(DASK), "scheduler", "--port", "0", "--no-dashboard", "--scheduler-file", F],
            start_new_session=True,
            **common,  # type: ignore[call-overload]
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() or not scheduler_file.read_text().strip():
            assert time.monotonic() < deadline, "the scheduler did not start"
            time.sleep(0.1)
        time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    [
                        str(DASK),
                        "worker",
                        "--scheduler-file",
                        F,
                        "--nthreads",
                        "1",
                        "--no-dashboard",
                    ],
                    start_new_session=True,
                    **common,  # type: ignore[call-overload]
                )
            )
        with distributed.Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=90)
        yield address
    finally:
        for proc in reversed(procs):  # workers first, then the scheduler
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


@pytest.mark.slow
def test_cli_started_scheduler_and_workers(cli_cluster: str) -> None:
    assert cli_cluster.startswith("tcp://")
    got = compare(list(SYMBOLS), bars=UNIVERSES["aligned"], executor=cli_cluster)
    assert_identical(got, serial("aligned"))
    with distributed.Client(cli_cluster) as client:
        states = gather_worker_state(client)
    assert len(states) == 2
    assert all(s["routers"] <= 1 and s["builds"] <= 1 for s in states.values())


# --- the command line ----------------------------------------------------------------------
def test_cli_passes_executor_and_prints_failures(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import modelyard.strategies.compare as compare_module
    from modelyard.cli import main

    seen: dict[str, Any] = {}
    failure = ShardFailure(3, ("IBM", "MSFT"), "signals", "DataError", "IBM: bad bars")

    def fake(symbols: Any = None, **kwargs: Any) -> Comparison:
        seen.update(kwargs)
        comp = serial("aligned")
        from dataclasses import replace

        return replace(comp, failures=(failure,))

    monkeypatch.setattr(compare_module, "compare", fake)
    out = tmp_path / "run"
    code = main(["compare", "--executor", "processes", "--workers", "2", "--out", str(out)])
    assert code == 1
    assert (seen["executor"], seen["workers"]) == ("processes", 2)
    err = capsys.readouterr().err
    assert "shard 3 (IBM, MSFT) failed in stage signals" in err
    assert "DataError: IBM: bad bars" in err
    assert (out / "comparison.json").exists()  # the rest is still written
    monkeypatch.setattr(compare_module, "compare", lambda *a, **k: serial("aligned"))
    assert main(["compare", "--executor", "tcp://10.0.0.1:8786", "--out", str(out)]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as usage:
        main(["compare", "--executor", "thread", "--out", str(out)])
    assert usage.value.code == 2
    assert "--executor 'thread'" in capsys.readouterr().err
    assert main(["compare", "--workers", "2", "--out", str(out)]) == 2
    assert "--workers" in capsys.readouterr().err


# --- training ------------------------------------------------------------------------------
ALPHAS = (0.1, 10.0, 1000.0, 1e5, 1e7)
_TRAINED: dict[str, tuple[bytes, dict[str, Any]]] = {}


def _train(out: Path, **kwargs: Any) -> tuple[bytes, dict[str, Any]]:
    """The ONNX bytes and the card of the universal model trained on the mixed universe."""
    from modelyard.models.training import train_model

    result = train_model(
        load_config(), "universal", bars=UNIVERSES["mixed"], alphas=ALPHAS, out=out, **kwargs
    )
    return result.onnx_path.read_bytes(), result.card.model_dump(mode="json")


def serial_training(tmp_path: Path) -> tuple[bytes, dict[str, Any]]:
    if "serial" not in _TRAINED:
        _TRAINED["serial"] = _train(tmp_path / "serial.onnx")
    return _TRAINED["serial"]


@pytest.mark.parametrize("size", [1, None])
@pytest.mark.parametrize("where", ["threads", "pool", "dask"])
def test_training_on_every_executor_writes_the_same_bytes(
    where: str, size: int | None, pool: ProcessPoolExecutor, dask_client: Any, tmp_path: Path
) -> None:
    """Features in symbol shards and the penalty search in tasks, on each executor: the same
    ONNX bytes and the same card (penalty scores, data hash, folds) as in this process."""
    executor: Any = {"threads": "threads", "pool": pool, "dask": dask_client}[where]
    workers = 2 if where == "threads" else None
    want = serial_training(tmp_path)
    got = _train(tmp_path / "got.onnx", executor=executor, workers=workers, shard_size=size)
    assert got[0] == want[0]
    assert got[1] == want[1]
    assert got[1]["penalty"]["scores"].keys() == {f"{a:g}" for a in ALPHAS}


def test_training_data_error_names_its_symbol_on_a_pool(pool: ProcessPoolExecutor) -> None:
    from modelyard.errors import DataError
    from modelyard.models.training import train_model

    bars = {**UNIVERSES["mixed"], "IBM": UNIVERSES["mixed"]["IBM"].iloc[:5]}
    for executor in (None, pool):
        with pytest.raises(DataError, match="IBM: no usable training rows"):
            train_model(load_config(), "universal", bars=bars, alphas=(1.0,), executor=executor)


def test_train_cli_passes_the_executor(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import modelyard.models.training as training
    from modelyard.cli import main

    seen: dict[str, Any] = {}

    def fake(*args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr(training, "train_model", fake)
    with pytest.raises(SystemExit):
        main(["train", "--model", "universal", "--executor", "processes", "--workers", "2"])
    assert (seen["executor"], seen["workers"]) == ("processes", 2)
    assert main(["train", "--model", "universal", "--workers", "2"]) == 2
    assert "--workers" in capsys.readouterr().err
