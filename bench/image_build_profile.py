"""Where an image build's time goes: dpkg's own log, read as a profile.

Run from the repository root, on a root left by ``kiosk-image build --keep-work``
(or while a build runs, on its unfinished root):

    python bench/image_build_profile.py OUT/.work-arm64/root/var/log/dpkg.log [--top 25]

dpkg writes one timestamped line (1 s resolution) at each step of each package:
unpack, configure, trigger processing. The time between a line and the next is
charged to what the first line began (unpacking, configuring or running the
triggers of one package), so a slow maintainer script or trigger shows up by name.
Gaps between dpkg runs (apt, dpkg-preconfigure, hooks) are charged to "outside dpkg";
the build's own step timings are in its manifest. Prints one JSON object: totals per kind and the top activities.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from datetime import datetime
from pathlib import Path

# dpkg log actions and states -> the activity that runs after them
_KIND = {"install": "unpack", "upgrade": "unpack", "half-installed": "unpack", "unpacked": "unpack",
         "configure": "configure", "half-configured": "configure", "trigproc": "trigger"}
OUTSIDE = "outside dpkg"


def activities(lines: list[str]) -> dict[str, float]:
    """Seconds per ``kind package``, from consecutive dpkg log lines."""
    spent: dict[str, float] = defaultdict(float)
    current: str | None = None  # nothing before dpkg's first line
    previous: datetime | None = None
    for line in lines:
        fields = line.split()
        if len(fields) < 4:
            continue
        stamp = datetime.strptime(f"{fields[0]} {fields[1]}", "%Y-%m-%d %H:%M:%S")
        if current is not None and previous is not None:
            spent[current] += (stamp - previous).total_seconds()
        previous = stamp
        action, rest = fields[2], fields[3:]
        if action == "status" and len(rest) >= 2:
            action, rest = rest[0], rest[1:]
        kind = _KIND.get(action)
        # "installed", "triggers-pending" and the like end an activity: until dpkg's next line the
        # time is apt's and the hooks' (dpkg-preconfigure, apt's dependency solving, between dpkg runs)
        current = f"{kind} {rest[0].split(':')[0]}" if kind and rest else OUTSIDE
    return dict(spent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dpkg_log", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    lines = args.dpkg_log.read_text().splitlines()
    spent = activities(lines)
    totals: dict[str, float] = defaultdict(float)
    for name, seconds in spent.items():
        totals[name if name == OUTSIDE else name.split()[0]] += seconds
    first, last = lines[0].split()[:2], lines[-1].split()[:2]
    print(json.dumps({
        "log_span": [" ".join(first), " ".join(last)],
        "seconds_per_kind": dict(sorted(totals.items())),
        "top": [{"activity": n, "seconds": s} for n, s in sorted(spent.items(), key=lambda kv: -kv[1])[:args.top]],
    }, indent=1))


if __name__ == "__main__":
    main()
