#!/usr/bin/env python3
"""Runs a meson build's tests straight from its meson-info/intro-tests.json,
without meson: for a machine that has the built tree but not the tools, or
whose copy of the tree sits at another path than where it was built.

  scripts/run_tests.py BUILD_DIR [--suite device] [--jobs N] [--deadline S]
                       [--stop S] [--logs DIR] [--only NAME,...]

Each test runs with its environment and timeout from the build, paths under
the source root it was built in rewritten to this checkout. Tests run --jobs
at a time in the build's order; once --deadline seconds have passed no new
test starts, and the summary names the tests that never ran; at --stop
seconds the tests still running are killed (reported as timeouts). Each test's
output goes to LOGS/NAME.log; one line a test, then a summary, go to stdout.
Exit status: 0 when every test that ran passed and none was left out.
"""

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import time


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("build_dir")
    p.add_argument("--suite", help="only tests in this suite (e.g. device)")
    p.add_argument("--only", help="comma-separated test names")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--deadline", type=float, default=float("inf"),
                   help="seconds after which no test starts")
    p.add_argument("--stop", type=float, default=float("inf"),
                   help="seconds after which running tests are killed")
    p.add_argument("--logs", default="test-logs")
    return p.parse_args(argv)


def load_tests(build_dir, suite, only):
    with open(os.path.join(build_dir, "meson-info", "intro-tests.json"), encoding="utf-8") as f:
        tests = json.load(f)
    with open(os.path.join(build_dir, "meson-info", "intro-projectinfo.json"),
              encoding="utf-8") as f:
        project = json.load(f)["descriptive_name"]
    wanted = set(only.split(",")) if only else None
    picked = []
    for test in tests:
        if suite and f"{project}:{suite}" not in test["suite"]:
            continue
        if wanted is not None and test["name"] not in wanted:
            continue
        picked.append(test)
    unknown = sorted(wanted - {t["name"] for t in tests}) if wanted else []
    if unknown:
        sys.exit(f"run_tests.py: no such test: {', '.join(unknown)}")
    return picked


def built_root(tests):
    """The build directory the tests were configured in, from LD_LIBRARY_PATH
    (meson sets it to BUILD/lib for tests linking the library)."""
    for test in tests:
        lib = test["env"].get("LD_LIBRARY_PATH", "")
        if lib.endswith("/lib"):
            return lib[:-len("/lib")]
    return None


def rewrite(text, old_build, new_build, old_src, new_src):
    return text.replace(old_build, new_build).replace(old_src, new_src)


def run_one(test, paths, logs, stop_at):
    new_build = paths[1]
    cmd = [rewrite(a, *paths) for a in test["cmd"]]
    env = dict(os.environ)
    for key, value in test["env"].items():
        env[key] = rewrite(value, *paths)
    if "LD_LIBRARY_PATH" in test["env"] and os.environ.get("LD_LIBRARY_PATH"):
        env["LD_LIBRARY_PATH"] += ":" + os.environ["LD_LIBRARY_PATH"]
    log_path = os.path.join(logs, test["name"] + ".log")
    start = time.monotonic()
    limit = min(test["timeout"] or float("inf"), max(1.0, stop_at - start))
    with open(log_path, "w", encoding="utf-8") as log:
        try:
            rc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                cwd=test["workdir"] or new_build,
                                timeout=None if limit == float("inf") else limit).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        except OSError as err:
            log.write(f"could not start: {err}\n")
            rc = "no-start"
    return test["name"], rc, time.monotonic() - start


def main(argv):
    args = parse_args(argv)
    tests = load_tests(args.build_dir, args.suite, args.only)
    # The build recorded absolute paths; here they become this checkout's.
    new_build = os.path.abspath(args.build_dir)
    old_build = built_root(tests) or new_build
    paths = (old_build, new_build, os.path.dirname(old_build),
             os.path.dirname(new_build))
    os.makedirs(args.logs, exist_ok=True)
    start = time.monotonic()
    results, left_out = [], []
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        pending = set()
        queue = list(tests)
        while queue or pending:
            while queue and len(pending) < args.jobs:
                if time.monotonic() - start > args.deadline:
                    left_out.extend(t["name"] for t in queue)
                    queue = []
                    break
                pending.add(pool.submit(run_one, queue.pop(0), paths, args.logs,
                                        start + args.stop))
            if not pending:
                break
            done, pending = concurrent.futures.wait(
                pending, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                name, rc, seconds = future.result()
                verdict = "OK" if rc == 0 else "SKIP" if rc == 77 else f"FAIL ({rc})"
                print(f"{verdict:<12} {seconds:7.1f} s  {name}", flush=True)
                results.append((name, rc))
    failed = [n for n, rc in results if rc not in (0, 77)]
    print(f"\n{len(results)} ran: {len(results) - len(failed)} passed or skipped, "
          f"{len(failed)} failed ({', '.join(failed) or 'none'}); "
          f"{len(left_out)} not started before the deadline ({', '.join(left_out) or 'none'}); "
          f"{time.monotonic() - start:.0f} s")
    return 0 if not failed and not left_out else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
