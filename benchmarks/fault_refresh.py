"""Fault test: refreshes of the committed file under ``-n 2``, each SIGKILLed at a random moment.

The victim is the xdist controller or one of its workers, chosen at random, killed at a
random point of a run (between 20% and 95% of an undisturbed run's duration).  After each
run the file must parse and keep every entry an undisturbed refresh writes.  Prints the
counts for the README's reliability section:

    python benchmarks/fault_refresh.py --kills 20
    python benchmarks/fault_refresh.py --kills 0 --interrupts 5     # -x, --maxfail=1 and Ctrl-C

(``tests/test_refresh_faults.py`` runs the same with two kills on the test suite's project.)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Outcome:
    runs: int = 0
    kills: int = 0
    controller_kills: int = 0
    lost: int = 0
    unreadable: int = 0


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def _keys(path: Path) -> set[str] | None:
    try:
        data = json.loads(path.read_text())
        return set(data["baselines"]) | {f"check {t}" for t in data.get("checks", {})}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _undisturbed(project: Path, extra: list[str], timeout: float) -> tuple[list[str], dict, float, set[str]]:
    """The refresh command, its environment, how long an undisturbed run takes, and what it records."""
    path = project / "b.json"
    cmd = [sys.executable, "-m", "pytest", *extra, "-p", "no:cacheprovider", "-p", "no:randomly",
           f"--ppl-baselines={path}", "--ppl-update-baselines", "-q"]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=project, env=env, capture_output=True, timeout=timeout, check=True)
    expected = _keys(path)
    assert expected, "the undisturbed refresh wrote no entries"
    return cmd, env, time.perf_counter() - t0, expected


def refresh_under_kills(project: Path, kills: int, rng: random.Random, timeout: float = 300) -> Outcome:
    """Refresh ``project``'s ``b.json`` once undisturbed, then until ``kills`` runs were killed."""
    path = project / "b.json"
    cmd, env, duration, expected = _undisturbed(project, ["-n", "2"], timeout)
    outcome = Outcome()
    while outcome.kills < kills and outcome.runs < 4 * kills:
        outcome.runs += 1
        proc = subprocess.Popen(cmd, cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        time.sleep(rng.uniform(0.2, 0.95) * duration)
        workers = _children(proc.pid)
        victim = rng.choice([proc.pid, *workers])
        if proc.poll() is None:
            try:
                os.kill(victim, signal.SIGKILL)
                outcome.kills += 1
                outcome.controller_kills += victim == proc.pid
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout=timeout)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # orphaned workers of a killed controller
            except ProcessLookupError:
                pass
        found = _keys(path)
        if found is None:
            outcome.unreadable += 1
        else:
            outcome.lost += len(expected - found)
    return outcome


def refresh_stopped_early(project: Path, rng: random.Random, interrupts: int, timeout: float = 300) -> list[tuple]:
    """Refreshes that stop early: ``-x`` and ``--maxfail=1`` at test_a's failure, and SIGINT (Ctrl-C)
    at random moments; returns (how, records lost, file unreadable) per run."""
    path = project / "b.json"
    base, env, duration, expected = _undisturbed(project, [], timeout)
    rows = []
    for how in ("-x", "--maxfail=1"):
        subprocess.run([*base, how], cwd=project, env={**env, "STOP": "fail"}, capture_output=True, timeout=timeout)
        found = _keys(path)
        rows.append((how, len(expected - (found or set())), found is None))
    for _ in range(interrupts):
        proc = subprocess.Popen(base, cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, 0.95) * duration)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        proc.wait(timeout=timeout)
        found = _keys(path)
        rows.append(("SIGINT", len(expected - (found or set())), found is None))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--interrupts", type=int, default=0,
                        help="also refreshes stopped by -x, --maxfail=1 and N SIGINTs (Ctrl-C) at random moments")
    args = parser.parse_args()
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from test_refresh_faults import STOPPABLE, THREE

    from plugin_support import CONFTEST, INI

    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        (project / "conftest.py").write_text(CONFTEST)
        (project / "pytest.ini").write_text(INI)
        (project / "test_suite.py").write_text(THREE)
        outcome = refresh_under_kills(project, args.kills, random.Random(args.seed))
    print("| runs | kills | of them the controller | entries lost | files unreadable |")
    print("|---:|---:|---:|---:|---:|")
    print(f"| {outcome.runs} | {outcome.kills} | {outcome.controller_kills} | {outcome.lost} | {outcome.unreadable} |")
    if args.interrupts:
        with tempfile.TemporaryDirectory() as tmp:
            project = Path(tmp)
            (project / "conftest.py").write_text(CONFTEST)
            (project / "pytest.ini").write_text(INI)
            (project / "test_suite.py").write_text(STOPPABLE)
            rows = refresh_stopped_early(project, random.Random(args.seed), args.interrupts)
        print("\n| refresh stopped by | records lost | file unreadable |")
        print("|---|---:|---:|")
        for how, lost, unreadable in rows:
            print(f"| {how} | {lost} | {'yes' if unreadable else 'no'} |")


if __name__ == "__main__":
    main()
