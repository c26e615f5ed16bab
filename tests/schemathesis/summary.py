"""Prints the figures of a contract run and exits non-zero if anything failed.

    summary.py REPORT.json METRICS_URL SCHEMATHESIS_EXIT_CODE

REPORT.json is schemathesis' JSON report; METRICS_URL is the server's `/metrics`, whose counts by
status say how many answers were 5xx (every answer, not only the failing cases schemathesis keeps).
"""

from __future__ import annotations

import collections
import json
import re
import sys
import urllib.request


def main() -> int:
    report_path, metrics_url, exit_code = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open(report_path, encoding="utf-8") as f:
        report = json.load(f)
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        metrics = response.read().decode("utf-8")

    by_class: collections.Counter[str] = collections.Counter()
    requests = 0
    pattern = re.compile(r'^mfa_step_http_requests_total\{.*status="(\d{3})".*\} (\d+)$')
    for line in metrics.splitlines():
        match = pattern.match(line)
        if match:
            count = int(match.group(2))
            requests += count
            by_class[match.group(1)[0] + "xx"] += count
    if requests == 0:
        print("summary: the server's /metrics counted no request", file=sys.stderr)
        return 1

    operations = report["operations"]
    cases = report["test_cases"]
    kinds: collections.Counter[str] = collections.Counter()
    for failure in report["failures"]:
        kinds[f"{failure['code']} {failure['title']}"] += int(failure.get("count", 1))
    errors = len(report["errors"])

    print()
    print(f"schemathesis {report['schemathesis_version']}, seed {report['seed']}: {report['command']}")
    print(f"operations: {operations['tested']} tested of {operations['total']}")
    print(
        f"cases: {cases['generated']} generated, {cases['with_failures']} with failures, "
        f"{cases['without_checks']} without checks"
    )
    print(f"failures: {sum(kinds.values())}" + "".join(f"\n  {n} x {k}" for k, n in sorted(kinds.items())))
    print(f"errors: {errors}")
    print(
        f"answers: {requests} ("
        + ", ".join(f"{k}: {by_class[k]}" for k in sorted(by_class))
        + f"); 5xx: {by_class['5xx']}"
    )
    failed = exit_code != 0 or kinds or errors or by_class["5xx"] or not report["complete"]
    print("contract run: " + ("FAILED" if failed else "OK"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
