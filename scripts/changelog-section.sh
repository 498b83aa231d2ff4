#!/usr/bin/env bash
# Prints the CHANGELOG.md section of a version (the lines under `## [VERSION] - YYYY-MM-DD`
# up to the next `## ` heading), or fails when there is none or it is empty: a release is
# only built for a version the changelog describes.
#   bash scripts/changelog-section.sh 0.1.0
set -euo pipefail
cd "$(dirname "$0")/.."

version=${1:?usage: changelog-section.sh VERSION}
python3 - "$version" <<'PY'
import re, sys
version = sys.argv[1]
heading = re.compile(r"^## \[" + re.escape(version) + r"\] - \d{4}-\d{2}-\d{2}\s*$")
lines = open("CHANGELOG.md", encoding="utf-8").read().splitlines()
start = next((i for i, line in enumerate(lines) if heading.match(line)), None)
if start is None:
    sys.exit(
        f"changelog-section: CHANGELOG.md has no section `## [{version}] - YYYY-MM-DD`: "
        f"move the Unreleased entries under such a heading before releasing {version}"
    )
end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
body = "\n".join(lines[start + 1 : end]).strip()
if not any(line.startswith("- ") for line in body.splitlines()):
    sys.exit(f"changelog-section: the section of {version} in CHANGELOG.md lists no change")
print(lines[start])
print()
print(body)
PY
