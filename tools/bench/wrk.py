"""Finding (or installing) wrk, sizing its threads and connections, and running one cell with it.

wrk is the load generator because it is C with an epoll loop per thread: on a two-core machine shared with
a Python server it stays far from being the bottleneck, where a Python client would compete with the
server for the same cores. Debian packages it (`apt-get install wrk`); `find_wrk` installs it when it
is missing and we are root (debian.py), and otherwise says what to install.

wrk aims whole threads at an address and gives every thread connections/threads connections, so with k
targets the thread count is rounded up to a multiple of k and the connection count to the nearest
multiple of the thread count (`plan_load`); the table's heading states the numbers actually used.
"""

from __future__ import annotations

import dataclasses
import resource
import subprocess
import tempfile

from tools.bench.debian import find_or_install
from tools.bench.result import WrkResult, parse_wrk_output
from tools.bench.script import CellSpec, build_script

EXIT_GRACE_S = 30.0  # beyond duration + timeout, before a wrk that hangs is killed


class WrkError(RuntimeError):
    """wrk failed; the message says why."""


def find_wrk(install: bool = True) -> str:
    """The path of wrk; installs the Debian package when missing, allowed, and root (else ToolMissing)."""
    return find_or_install("wrk", "wrk", install)


def wrk_version(path: str) -> str:
    done = subprocess.run([path, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    words = done.stdout.split()
    return " ".join(words[:2]) if words else "wrk"


@dataclasses.dataclass(frozen=True)
class LoadPlan:
    threads: int
    connections: int


def plan_load(connections: int, threads: int, target_count: int) -> LoadPlan:
    """Threads as a multiple of the target count, connections as a multiple of the threads."""
    if connections < 1 or threads < 1 or target_count < 1:
        raise ValueError(f"connections, threads and targets must be >= 1, got {connections}, {threads}, "
                         f"{target_count}")
    planned_threads = -(-max(threads, target_count) // target_count) * target_count
    per_thread = max(1, round(connections / planned_threads))
    return LoadPlan(threads=planned_threads, connections=per_thread * planned_threads)


def wrk_command(wrk_path: str, script_path: str, url: str, plan: LoadPlan, duration_s: int,
                timeout_s: int) -> list[str]:
    return [wrk_path, "--threads", str(plan.threads), "--connections", str(plan.connections),
            "--duration", f"{duration_s}s", "--timeout", f"{timeout_s}s", "--script", script_path, url]


def run_cell(wrk_path: str, spec: CellSpec, plan: LoadPlan, duration_s: int, timeout_s: int = 10) -> WrkResult:
    """Run wrk for one cell and return what its script printed; WrkError when wrk fails."""
    if duration_s < 1 or timeout_s < 1:
        raise ValueError(f"duration_s and timeout_s must be whole seconds >= 1, got {duration_s}, {timeout_s}")
    host, port = spec.targets[0]
    url = f"http://{host}:{port}/"  # wrk resolves this; setup() in the script re-aims each thread
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="bench-") as script_file:
        script_file.write(build_script(spec))
        script_file.flush()
        command = wrk_command(wrk_path, script_file.name, url, plan, duration_s, timeout_s)
        cpu_before_s = _children_cpu_s()
        try:
            done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  timeout=duration_s + timeout_s + EXIT_GRACE_S)
        except subprocess.TimeoutExpired:
            raise WrkError(f"wrk did not finish within {duration_s + timeout_s + EXIT_GRACE_S:g} s") from None
    if done.returncode != 0:
        raise WrkError(f"wrk exited with {done.returncode}: {(done.stderr or done.stdout).strip()[-600:]}")
    try:
        result = parse_wrk_output(done.stdout)
    except ValueError as error:
        raise WrkError(f"{error}\nwrk's stderr: {done.stderr.strip()[-600:]}") from None
    return dataclasses.replace(result, loader_cpu_s=_children_cpu_s() - cpu_before_s)


def _children_cpu_s() -> float:
    """CPU used by waited-for children so far: its growth across one subprocess.run is wrk's own."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
