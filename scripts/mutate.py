"""Mutation testing of wsq's core groups: the driver behind ``scripts/mutate``.

Each Python group runs mutmut in its own work folder (``build/mutate/GROUP``: a copy of ``wsq/``,
``tests/`` and ``pyproject.toml`` with that group's ``[tool.mutmut]`` appended), so groups have
their own test selection and can run side by side. The JS client runs Stryker from
``js-client/`` (``stryker.config.json``). Each group's score, counts and surviving mutants (with
their diffs) go to ``bench/results/mutation/GROUP.json`` and ``GROUP-survivors.txt``; the
summary is printed.

Not part of the CI test command: a full run takes a long time (docs/testing.md has the
figures). Usage: ``scripts/mutate [--only GROUP ...] [--jobs N] [--report-only]``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
BUILD = ROOT / "build" / "mutate"
RESULTS = ROOT / "bench" / "results" / "mutation"

#: Every group runs the fast suites: the unit tests (less the few that start processes or read
#: the repository, which scripts/mutate_select.py leaves out) and the conformance suite on the
#: group's brokers (the memory broker; for the Redis group code also one real redis-server the
#: harness starts on a free port; never the cluster). mutmut runs each mutant against only the
#: tests that reach its function, so a wide selection costs only the first (stats) run. Whole
#: folders, not file lists: mutmut forgets every result when the selection changes, and a new
#: test file in a folder is picked up without that.
FAST_TESTS = ["tests/unit", "tests/conformance"]


@dataclass(frozen=True)
class PyGroup:
    name: str
    mutate: list[str]
    tests: list[str]
    about: str
    brokers: str = "memory"


@dataclass
class Outcome:
    group: str
    counts: dict[str, int] = field(default_factory=dict)
    survivors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""
    #: js: the counts of each source file (Stryker reports them per file).
    files: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def score(self) -> float | None:
        """Killed (timeouts count as killed) over every mutant that ran or had no test: a mutant
        no test reaches is a surviving one, not a skipped one."""
        killed = self.counts.get("killed", 0) + self.counts.get("timeout", 0)
        total = killed + sum(
            self.counts.get(k, 0) for k in ("survived", "no_tests", "suspicious", "segfault")
        )
        return killed / total if total else None


PY_GROUPS = {
    g.name: g
    for g in (
        PyGroup(
            "core",
            ["wsq/core/*"],
            FAST_TESTS,
            "wsq/core: codec, addresses, messages, limits, policy",
        ),
        PyGroup(
            "protocol",
            ["wsq/protocol/*"],
            FAST_TESTS,
            "wsq/protocol: the sans-I/O connection state machine",
        ),
        PyGroup(
            "hub",
            ["wsq/hub/*"],
            FAST_TESTS,
            "wsq/hub: copy, move, conflate, outlet",
        ),
        PyGroup(
            "brokers",
            ["wsq/broker/memory/groups.py", "wsq/broker/redis/groups.py"],
            FAST_TESTS,
            "queue groups: wsq/broker/memory/groups.py, wsq/broker/redis/groups.py",
            brokers="memory,redis",
        ),
    )
}
GROUPS = [*PY_GROUPS, "js"]

SHOW_DIFFS = """
import sys
from mutmut.__main__ import find_mutant, get_diff_for_mutant
for name in sys.stdin.read().split():
    print(f"# {name}")
    print(get_diff_for_mutant(name, path=find_mutant(name).path))
"""


def toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def prepare(group: PyGroup, fresh: bool) -> Path:
    """The group's work folder: the sources, the tests and pyproject.toml with [tool.mutmut]."""
    work = BUILD / group.name
    if fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "node_modules", "screenshots")
    for tree in ("wsq", "tests"):
        shutil.rmtree(work / tree, ignore_errors=True)
        shutil.copytree(ROOT / tree, work / tree, ignore=ignore)
    (work / "plugins").mkdir(exist_ok=True)
    shutil.copy(ROOT / "scripts" / "mutate_select.py", work / "plugins" / "mutate_select.py")
    config = (ROOT / "pyproject.toml").read_text()
    config += f"""
[tool.mutmut]
source_paths = ["wsq"]
only_mutate = {toml_list(group.mutate)}
pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-p", "mutate_select"]
pytest_add_cli_args_test_selection = {toml_list(group.tests)}
# A mutant's time limit: 5 x its tests' clean time + 5 s (an endless loop is a timeout, killed).
timeout_multiplier = 5.0
timeout_constant = 5.0
use_git_change_detection = false
"""
    (work / "pyproject.toml").write_text(config)
    return work


def run_in_own_group(cmd: list[str], cwd: Path, log: Path, env: dict[str, str]) -> int:
    """Run cmd in a new session; afterwards end what it left behind in that session (a
    redis-server a timed-out mutant's tests started), and nothing else."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            code = proc.wait()
        except KeyboardInterrupt:
            os.killpg(proc.pid, signal.SIGINT)
            code = proc.wait()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    return code


def survivors(work: Path, env: dict[str, str]) -> list[str]:
    """The mutants of the last run that the tests did not kill (survived, no tests, suspicious)."""
    if not (work / "mutants").exists():
        return []
    listing = subprocess.run(
        [str(VENV_BIN / "mutmut"), "results"], cwd=work, env=env, capture_output=True, text=True
    ).stdout
    names = []
    for line in listing.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if status in ("survived", "no tests", "suspicious"):
            names.append(name)
    return names


def saved_verdicts(work: Path) -> dict[Path, dict[str, int | None]]:
    """Each mutant's verdict, by its meta file."""
    return {
        meta: json.loads(meta.read_text())["exit_code_by_key"]
        for meta in (work / "mutants").rglob("*.meta")
    }


def restore_verdicts(work: Path, verdicts: dict[Path, dict[str, int | None]]) -> None:
    """Put back the verdicts a retest did not run again. mutmut forgets them all when its test
    selection changed; a killed mutant stays killed when tests are only added (same code),
    so the last run's kills stand and only its survivors needed running."""
    for meta, before in verdicts.items():
        if not meta.exists():
            continue
        data = json.loads(meta.read_text())
        now = data["exit_code_by_key"]
        for key, code in before.items():
            if key in now and now[key] is None and code is not None:
                now[key] = code
        meta.write_text(json.dumps(data, indent=4))


#: ``mutmut results`` statuses by the names of ``export-cicd-stats``' counts.
COUNT_KEYS = {
    "killed": "killed",
    "timeout": "timeout",
    "survived": "survived",
    "no tests": "no_tests",
    "suspicious": "suspicious",
}


def stored_results(group: str) -> tuple[dict[str, str], dict[str, int]]:
    """The survivors (name -> status) and counts of the group's stored results."""
    path = RESULTS / f"{group}.json"
    if not path.exists():
        return {}, {}
    data = json.loads(path.read_text())
    survivors = {}
    for item in data.get("survivors", []):
        name, _, status = item.rpartition(" (")
        survivors[name] = status.rstrip(")")
    return survivors, {k: int(v) for k, v in data.get("counts", {}).items()}


def merge_stored(
    work: Path, env: dict[str, str], stored: dict[str, str], counts: dict[str, int]
) -> tuple[dict[str, int], dict[str, str]]:
    """The stored counts, with the stored survivors' verdicts of this run in place of theirs:
    a retest ran only those, and every other mutant keeps its stored verdict (the code is the
    same; tests were only added). A work folder laid by a retest from stored results knows
    no other verdicts, so its own counts would be those of the retested ones alone."""
    listing = subprocess.run(
        [str(VENV_BIN / "mutmut"), "results", "--all", "true"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    ).stdout
    now = {}
    for line in listing.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if name in stored:
            now[name] = status
    counts = dict(counts)
    left = {}
    for name, before in stored.items():
        after = now.get(name, before)
        if after not in COUNT_KEYS:  # not run (an error): its stored verdict stands
            after = before
        counts[COUNT_KEYS[before]] = counts.get(COUNT_KEYS[before], 0) - 1
        counts[COUNT_KEYS[after]] = counts.get(COUNT_KEYS[after], 0) + 1
        if after in ("survived", "no tests", "suspicious"):
            left[name] = after
    return counts, left


def run_py(group: PyGroup, jobs: int, fresh: bool, report_only: bool, retest: bool) -> Outcome:
    work = BUILD / group.name
    env = {
        **os.environ,
        "CI": "",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": str(work / "plugins"),
        "WSQ_MUTATE_BROKERS": group.brokers,
    }
    # The survivors and verdicts of the last run, read before its folder is laid anew.
    names = survivors(work, env) if retest else []
    verdicts = saved_verdicts(work) if retest else {}
    # A retest counts from the stored results (the last run's, whole): their survivors take
    # this run's verdicts, every other mutant keeps its own. Without a work folder (another
    # checkout) the stored results also name the survivors to run.
    stored: dict[str, str] = {}
    stored_counts: dict[str, int] = {}
    if retest:
        stored, stored_counts = stored_results(group.name)
        if not (work / "mutants").exists():
            names = list(stored)
    if not report_only:
        prepare(group, fresh and not retest)
    outcome = Outcome(group.name)
    mutmut = str(VENV_BIN / "mutmut")
    started = time.monotonic()
    if not report_only:
        if retest and not names:
            print("  no survivors to test again")
        code = run_in_own_group(
            [mutmut, "run", "--max-children", str(jobs), *names], work, work / "run.log", env
        )
        if retest:
            restore_verdicts(work, verdicts)
        if code:
            outcome.error = f"mutmut run exited {code}: see {work / 'run.log'}"
    outcome.seconds = time.monotonic() - started
    subprocess.run([mutmut, "export-cicd-stats"], cwd=work, env=env, capture_output=True)
    stats = work / "mutants" / "mutmut-cicd-stats.json"
    if stats.exists():
        outcome.counts = {k: int(v) for k, v in json.loads(stats.read_text()).items()}
    if stored:
        outcome.counts, left = merge_stored(work, env, stored, stored_counts)
    else:
        listing = subprocess.run(
            [mutmut, "results"], cwd=work, env=env, capture_output=True, text=True
        ).stdout
        left = {}
        for line in listing.splitlines():
            name, _, status = line.strip().rpartition(": ")
            if status in ("survived", "no tests", "suspicious"):
                left[name] = status
    names = list(left)
    outcome.survivors = [f"{name} ({status})" for name, status in left.items()]
    # Every diff from one process (`mutmut show` would start one per mutant).
    diffs = subprocess.run(
        [str(VENV_BIN / "python"), "-c", SHOW_DIFFS],
        cwd=work,
        env=env,
        input="\n".join(names),
        capture_output=True,
        text=True,
    ).stdout
    (RESULTS / f"{group.name}-survivors.txt").write_text(diffs)
    return outcome


#: Stryker's mutant statuses by the names of the counts (a runtime error is a kill: the tests
#: failed on the mutant).
STRYKER_STATUS = {
    "Killed": "killed",
    "Timeout": "timeout",
    "Survived": "survived",
    "NoCoverage": "no_tests",
    "CompileError": "skipped",
    "RuntimeError": "killed",
    "Ignored": "skipped",
    "Pending": "skipped",
}


def file_score(counts: dict[str, int]) -> float | None:
    return Outcome("", counts).score


def run_js(jobs: int, files: str | None) -> Outcome:
    """Stryker over js-client/src against the fast JS suite (js-client/test/unit: no gateway),
    with the tap runner's per-test-file coverage (stryker.config.json)."""
    js = ROOT / "js-client"
    outcome = Outcome("js")
    if not (js / "node_modules" / "@stryker-mutator" / "tap-runner").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=js, check=True)
    env = {**os.environ, "CI": ""}
    started = time.monotonic()
    log = BUILD / "js.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(js / "node_modules" / ".bin" / "stryker"), "run", "--concurrency", str(jobs)]
    if files:
        cmd += ["--mutate", files]
    report = js / "reports" / "mutation" / "mutation.json"
    report.unlink(missing_ok=True)  # never count an earlier run's report
    code = run_in_own_group(cmd, js, log, env)
    outcome.seconds = time.monotonic() - started
    if code:
        outcome.error = f"stryker exited {code}: see {log}"
    if report.exists():
        data = json.loads(report.read_text())
        lines = []
        for path, file in sorted(data["files"].items()):
            per_file = outcome.files.setdefault(path, {})
            for m in file["mutants"]:
                key = STRYKER_STATUS.get(m["status"], "skipped")
                outcome.counts[key] = outcome.counts.get(key, 0) + 1
                per_file[key] = per_file.get(key, 0) + 1
                if key in ("survived", "no_tests"):
                    where = f"{path}:{m['location']['start']['line']}"
                    what = f"{m['mutatorName']} -> {m.get('replacement', '')!r}"
                    outcome.survivors.append(f"{where} {what} ({key})")
                    lines.append(f"{where} {what} ({key})")
        (RESULTS / "js-survivors.txt").write_text("\n".join(lines) + "\n")
        for path, counts in outcome.files.items():
            score = file_score(counts)
            shown = "-" if score is None else f"{score:6.1%}"
            print(f"  {path:24} {shown:>6}  {counts}")
    return outcome


def commit() -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/mutate", description=__doc__.split("\n")[0])
    parser.add_argument("--only", action="append", choices=GROUPS, help="run this group (repeat)")
    parser.add_argument("--jobs", type=int, default=2, help="mutants run at once (default 2)")
    parser.add_argument(
        "--js-files",
        help="js: only these sources, e.g. src/backoff.js,src/outbox.js (Stryker's --mutate)",
    )
    parser.add_argument(
        "--retest",
        action="store_true",
        help="run only the last run's survivors again (after adding tests; the rest stand); "
        "without a work folder, the survivors of bench/results/mutation/GROUP.json; "
        "with --report-only, count the work folder's verdicts into the stored results",
    )
    parser.add_argument("--fresh", action="store_true", help="forget earlier results of a group")
    parser.add_argument(
        "--report-only", action="store_true", help="print the last run's results, run nothing"
    )
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    outcomes = []
    for name in args.only or GROUPS:
        print(f"== {name}", flush=True)
        if name == "js":
            outcome = run_js(args.jobs, args.js_files)
        else:
            outcome = run_py(PY_GROUPS[name], args.jobs, args.fresh, args.report_only, args.retest)
        outcomes.append(outcome)
        summary = {
            "group": name,
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": commit(),
            "seconds": round(outcome.seconds),
            "counts": outcome.counts,
            "score": None if outcome.score is None else round(outcome.score, 4),
            "survivors": outcome.survivors,
            "error": outcome.error,
            **({"files": outcome.files} if outcome.files else {}),
        }
        (RESULTS / f"{name}.json").write_text(json.dumps(summary, indent=2) + "\n")
        for s in outcome.survivors:
            print(f"  survived: {s}")
        if outcome.error:
            print(f"  error: {outcome.error}")
    print("\ngroup     killed  timeout survived no-tests  score   time")
    for o in outcomes:
        c = o.counts
        score = "-" if o.score is None else f"{o.score:6.1%}"
        print(
            f"{o.group:9} {c.get('killed', 0):6} {c.get('timeout', 0):8} {c.get('survived', 0):8}"
            f" {c.get('no_tests', 0):8}  {score:>6} {o.seconds:5.0f}s"
        )
    print(f"\nsurvivors with their diffs: {RESULTS.relative_to(ROOT)}/GROUP-survivors.txt")
    return 1 if any(o.error for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
