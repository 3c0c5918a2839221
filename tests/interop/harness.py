"""Shared by the interop scripts (plain standard library, so that both SDK
virtualenvs can import it): the command line and the pass/fail bookkeeping.

Every script takes the same arguments, each also readable from an
environment variable (PREBUILDD_<NAME>, e.g. PREBUILDD_BASE_URL):

  --base-url             the server's root, e.g. http://127.0.0.1:8080
  --api-key              a key of organization A
  --other-org-api-key    a key of another organization
  --org-id               organization A's ID
  --subject-id           the subject of --api-key
  --project-id           a project of A with prebuilds on --class-id (its
                         default class) and --second-class-id
  --second-project-id    another project of A with prebuilds on --class-id
  --disabled-project-id  a project of A with prebuilds disabled
  --class-id, --second-class-id
  --runner-id            the runner of both classes
  --section NAME         run only this section (repeatable; default: all
                         but those that need a running reconciler)

The scripts expect a fresh organization A (no warm pools yet: a pool per
(project, class) pair is all the API allows). Each script prints one line
per check and ends with `N passed, M failed`; the exit status is 0 only when
nothing failed.
"""

import argparse
import os
import re
import sys
import traceback

UUID_V7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
UNKNOWN_ID = "07e03a28-65a5-4d98-b532-8ea67b188048"

ARGUMENTS = [
    "base-url",
    "api-key",
    "other-org-api-key",
    "org-id",
    "subject-id",
    "project-id",
    "second-project-id",
    "disabled-project-id",
    "class-id",
    "second-class-id",
    "runner-id",
]


def parse_args(description, sections, only_if_selected=()):
    parser = argparse.ArgumentParser(description=description)
    for name in ARGUMENTS:
        env = "PREBUILDD_" + name.upper().replace("-", "_")
        parser.add_argument("--" + name, default=os.environ.get(env), help=f"(env {env})")
    parser.add_argument("--section", action="append", choices=list(sections), help="run only these sections")
    args = parser.parse_args()
    missing = [name for name in ARGUMENTS if getattr(args, name.replace("-", "_")) is None]
    if missing:
        parser.error("missing: " + ", ".join("--" + m for m in missing))
    args.base_url = args.base_url.rstrip("/")
    if not args.section:
        args.section = [name for name in sections if name not in only_if_selected]
    return args


class Checks:
    """Counts checks; a failed check is reported and the run goes on."""

    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.section = ""

    def check(self, condition, what, detail=None):
        if condition:
            self.passed += 1
            print(f"ok    [{self.section}] {what}")
        else:
            self.failed += 1
            extra = f": {detail!r}" if detail is not None else ""
            print(f"FAIL  [{self.section}] {what}{extra}")
        return condition

    def equal(self, actual, expected, what):
        return self.check(actual == expected, what, f"expected {expected!r}, got {actual!r}")

    def run(self, sections, selected):
        """Runs the selected sections in order; an exception fails its section."""
        for name, function in sections.items():
            if name not in selected:
                continue
            self.section = name
            try:
                function()
            except Exception:  # an unexpected error: report it and go on
                self.failed += 1
                print(f"FAIL  [{name}] raised:")
                traceback.print_exc(file=sys.stdout)
        print(f"{self.passed} passed, {self.failed} failed")
        sys.stdout.flush()
        sys.exit(1 if self.failed or not self.passed else 0)
