"""HTTP load benchmark: concurrent clients on the read API of a real `twinledger serve`.

    python3 -m infrastructure.bench.http_load --db postgresql://postgres@127.0.0.1:5432/test

On scratch storage beside --db (never the ledger itself; dropped after): a few runs are
simulated and recorded by the real engine, the read tables are grown with copies of them to
``--rows`` result rows (as `twinledger bench` does for its queries), then a server process is
started on 127.0.0.1 and ``--clients`` asynchronous clients (httpx) each request, in a loop,
GET /api/v1/runs/{id}/results of a random run or GET /api/v1/runs?... (a filtered page).

The load is bounded: it stops after ``--requests`` requests in all or ``--seconds`` seconds,
whichever comes first, and it only talks to the loopback address it started.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Annotated, Any

import httpx
import typer

from infrastructure.bench.data import BUDGET_CENTS
from infrastructure.bench.runner import pad_results, scratch, settle
from infrastructure.service import Ledger
from infrastructure.settings import resolve_database

LOOPBACK = "127.0.0.1"
Progress = Callable[[str], None]


@dataclass
class EndpointLatency:
    """Milliseconds from sending a request to having read its whole body."""

    name: str
    count: int
    errors: int
    p50: float
    p95: float
    max: float
    mean_bytes: float
    failures: dict[str, int] = field(default_factory=dict)  # status code or error: count
    not_modified: int = 0  # 304 answers to a revalidating client (--revalidate)


@dataclass
class LoadReport:
    backend: str
    result_rows: int
    runs: int
    clients: int
    requests: int
    seconds: float
    think_ms: tuple[int, int]
    endpoints: list[EndpointLatency] = field(default_factory=list)
    revalidate: bool = False  # clients kept results' ETags and sent If-None-Match
    # the server process's CPU time over the load, per request: steadier than latency on a
    # shared machine (None where /proc is missing)
    server_cpu_ms_per_request: float | None = None

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "requests_per_second": self.throughput}


# --- data --------------------------------------------------------------------------------------


def prepare(url: str, *, runs: int, years: int, rows: int, progress: Progress) -> int:
    """Record ``runs`` real runs of ``years`` years, then copy them until simulation_results
    holds ``rows`` rows. Returns the rows it holds."""
    with Ledger.open(url) as ledger:
        twin = ledger.clone_twin(name="http-load", body="mars", created_by="bench")
        for seed in range(runs):
            progress(f"simulating run {seed + 1} of {runs} ({years} years)")
            run = ledger.queue_run(
                twin.id,
                pattern="mars_terraform",
                years=years,
                budget_cents=BUDGET_CENTS,
                seed=seed,
                initiated_by="bench",
            )
            ledger.execute_run(run.id)
    if rows:
        progress(f"copying runs until simulation_results has {rows:,} rows")
    _, held = pad_results(url, rows)
    settle(url)
    return held


# --- the server ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


@contextmanager
def server(
    url: str, *options: str, port: int | None = None, timeout: float = 60.0
) -> Iterator[str]:
    """`twinledger serve [options]` on the loopback address, in its own process; yields its
    base URL."""
    with serving(url, *options, port=port, timeout=timeout) as (base, _):
        yield base


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) a process has used so far; None where /proc is not there."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve_command(url: str, port: int, *options: str) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of `twinledger serve` on the loopback address, run
    from this source tree (whatever is installed)."""
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
    }
    command = [
        sys.executable,
        "-c",
        "from infrastructure.cli import main; main()",
        "--db",
        url,
        "serve",
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        *options,
    ]
    return command, env


@contextmanager
def serving(
    url: str, *options: str, port: int | None = None, timeout: float = 60.0
) -> Iterator[tuple[str, int]]:
    """As ``server``, yielding (base URL, the server's process id)."""
    port = port or free_port()
    command, env = serve_command(url, port, *options)
    # stderr to a file: a pipe nobody reads could fill up and block the server
    with tempfile.TemporaryFile(mode="w+") as log:
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True
        )
        try:
            yield wait_until_up(f"http://{LOOPBACK}:{port}", process, log, timeout), process.pid
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_until_up(base: str, process: subprocess.Popen[str], log: IO[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"the server exited: {log.read()[-2000:]}")
        try:
            if httpx.get(f"{base}/api/v1/health", timeout=2.0).status_code == 200:
                return base
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server did not answer on {base} within {timeout:.0f} s")
        time.sleep(0.2)


# --- the load ------------------------------------------------------------------------------------


@dataclass
class Sample:
    endpoint: str
    milliseconds: float
    ok: bool
    size: int
    outcome: str = "200"  # the status code, or the transport error's class name


def run_filters(run_ids: list[str], twin_ids: list[str]) -> list[dict[str, str]]:
    """The GET /runs queries the clients cycle through: filtered, ordered, one page each."""
    return [
        {"status": "completed", "limit": "50"},
        {"pattern": "mars_terraform", "limit": "50"},
        {"twin": random.Random(0).choice(twin_ids), "limit": "100"},
        {"limit": "50"},
    ]


async def _client(
    http: httpx.AsyncClient,
    chooser: random.Random,
    run_ids: list[str],
    filters: list[dict[str, str]],
    budget: dict[str, int],
    stop_at: float,
    think: tuple[int, int],
    samples: list[Sample],
    revalidate: bool = False,
) -> None:
    tags: dict[str, str] = {}  # a browser's cache: the ETag of each results answer it holds
    while budget["left"] > 0 and time.monotonic() < stop_at:
        budget["left"] -= 1
        if chooser.random() < 0.5:
            endpoint, path, params = (
                "results",
                f"/api/v1/runs/{chooser.choice(run_ids)}/results",
                {},
            )
        else:
            endpoint, path, params = "runs", "/api/v1/runs", chooser.choice(filters)
        held = tags.get(path) if revalidate else None
        headers = {"If-None-Match": held} if held else {}
        began = time.perf_counter()
        try:
            response = await http.get(path, params=params, headers=headers)
            body = response.content
            outcome = str(response.status_code)
            if revalidate and "etag" in response.headers:
                tags[path] = response.headers["etag"]
        except httpx.HTTPError as error:
            body, outcome = b"", type(error).__name__
        milliseconds = (time.perf_counter() - began) * 1000
        ok = outcome == "200" or (outcome == "304" and held is not None)
        samples.append(Sample(endpoint, milliseconds, ok, len(body), outcome))
        if think[1] > 0:
            await asyncio.sleep(chooser.uniform(think[0], think[1]) / 1000)


async def drive(
    base: str,
    run_ids: list[str],
    twin_ids: list[str],
    *,
    clients: int,
    requests: int,
    seconds: float,
    think: tuple[int, int],
    seed: int = 42,
    revalidate: bool = False,
) -> tuple[list[Sample], float]:
    """``clients`` concurrent clients until ``requests`` are sent or ``seconds`` pass."""
    if httpx.URL(base).host not in {LOOPBACK, "localhost", "::1"}:
        raise ValueError(f"base: the load only goes to the loopback address, not {base}")
    samples: list[Sample] = []
    budget = {"left": requests}
    filters = run_filters(run_ids, twin_ids)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60.0) as http:
        began = time.perf_counter()
        stop_at = time.monotonic() + seconds
        await asyncio.gather(
            *(
                _client(
                    http,
                    random.Random(seed + n),
                    run_ids,
                    filters,
                    budget,
                    stop_at,
                    think,
                    samples,
                    revalidate,
                )
                for n in range(clients)
            )
        )
        return samples, time.perf_counter() - began


def summarise(samples: list[Sample]) -> list[EndpointLatency]:
    found = []
    for name in sorted({sample.endpoint for sample in samples}):
        mine = [s for s in samples if s.endpoint == name]
        timings = sorted(s.milliseconds for s in mine)
        found.append(
            EndpointLatency(
                name=name,
                count=len(mine),
                errors=sum(not s.ok for s in mine),
                p50=statistics.median(timings),
                p95=timings[max(0, -(-len(timings) * 95 // 100) - 1)],
                max=timings[-1],
                mean_bytes=statistics.fmean(s.size for s in mine),
                failures=dict(Counter(s.outcome for s in mine if not s.ok)),
                not_modified=sum(s.outcome == "304" for s in mine),
            )
        )
    return found


def ids_of(base: str, path: str, limit: int = 1000) -> list[str]:
    """Every id a list endpoint pages through (keyset pages, up to ``limit`` ids)."""
    found: list[str] = []
    cursor: str | None = None
    while len(found) < limit:
        params = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
        page = httpx.get(f"{base}{path}", params=params, timeout=60.0).json()
        found += [item["id"] for item in page["items"]]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return found[:limit]


def run_http_load(
    url: str | None,
    *,
    clients: int = 50,
    requests: int = 5000,
    seconds: float = 120.0,
    think: tuple[int, int] = (0, 0),
    runs: int = 4,
    years: int = 1000,
    rows: int = 1_000_000,
    revalidate: bool = False,
    progress: Progress = lambda _: None,
) -> LoadReport:
    """The whole benchmark on scratch storage beside ``url``; returns the latencies."""
    database = resolve_database(url)
    with scratch(database, "http") as scratch_url:
        held = prepare(scratch_url, runs=runs, years=years, rows=rows, progress=progress)
        progress("starting the server")
        with serving(scratch_url) as (base, pid):
            run_ids = ids_of(base, "/api/v1/runs")
            twin_ids = ids_of(base, "/api/v1/twins")
            progress(f"warming up, then {clients} clients on {len(run_ids):,} runs")
            asyncio.run(
                drive(base, run_ids, twin_ids, clients=2, requests=20, seconds=30, think=(0, 0))
            )
            cpu_before = cpu_seconds(pid)
            samples, spent = asyncio.run(
                drive(
                    base,
                    run_ids,
                    twin_ids,
                    clients=clients,
                    requests=requests,
                    seconds=seconds,
                    think=think,
                    revalidate=revalidate,
                )
            )
            cpu_after = cpu_seconds(pid)
    cpu_per_request = (
        None
        if cpu_before is None or cpu_after is None or not samples
        else (cpu_after - cpu_before) * 1000 / len(samples)
    )
    report = LoadReport(
        backend="postgresql" if database.is_postgres else "sqlite",
        result_rows=held,
        runs=len(run_ids),
        clients=clients,
        requests=len(samples),
        seconds=spent,
        think_ms=think,
        endpoints=summarise(samples),
        server_cpu_ms_per_request=cpu_per_request,
        revalidate=revalidate,
    )
    return report


# --- command line --------------------------------------------------------------------------------

cli = typer.Typer(add_completion=False)


@cli.command()
def main(
    db: Annotated[
        str | None, typer.Option(help="Database URL (the benchmark uses scratch storage beside it)")
    ] = None,
    clients: Annotated[int, typer.Option(min=1, max=500)] = 50,
    requests: Annotated[
        int, typer.Option(min=1, max=1_000_000, help="Stop after this many requests")
    ] = 5000,
    seconds: Annotated[float, typer.Option(min=1, max=3600, help="...or after this long")] = 120.0,
    think: Annotated[
        str, typer.Option(help="Pause between a client's requests, ms: MIN,MAX")
    ] = "0,0",
    runs: Annotated[int, typer.Option(min=1, help="Runs simulated by the engine")] = 4,
    years: Annotated[int, typer.Option(min=1, max=1000)] = 1000,
    rows: Annotated[
        int, typer.Option(min=0, help="Grow simulation_results to this many rows")
    ] = 1_000_000,
    revalidate: Annotated[
        bool,
        typer.Option(
            "--revalidate",
            help="Clients keep each results answer's ETag and send If-None-Match (as browsers)",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")] = False,
) -> None:
    """Concurrent clients on GET /runs/{id}/results and GET /runs?...; p50/p95 per endpoint."""
    low, _, high = think.partition(",")
    report = run_http_load(
        db,
        clients=clients,
        requests=requests,
        seconds=seconds,
        think=(int(low), int(high or low)),
        runs=runs,
        years=years,
        rows=rows,
        revalidate=revalidate,
        progress=lambda message: print(f"http load: {message}", file=sys.stderr),
    )
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(
        "endpoint",
        "requests",
        "errors",
        "p50 ms",
        "p95 ms",
        "max ms",
        "bytes",
        "304",
        title=f"HTTP load: {report.backend}, {report.result_rows:,} result rows, {report.runs:,} "
        f"runs, {report.clients} clients, {report.requests:,} requests in {report.seconds:.1f} s "
        f"({report.throughput:,.0f}/s)"
        + (
            ""
            if report.server_cpu_ms_per_request is None
            else f", server CPU {report.server_cpu_ms_per_request:.1f} ms per request"
        ),
    )
    for e in report.endpoints:
        table.add_row(
            e.name,
            f"{e.count:,}",
            ", ".join(f"{n} x {what}" for what, n in e.failures.items()) or "0",
            f"{e.p50:.1f}",
            f"{e.p95:.1f}",
            f"{e.max:.1f}",
            f"{e.mean_bytes:,.0f}",
            f"{e.not_modified:,}",
        )
    Console().print(table)


if __name__ == "__main__":
    cli()
