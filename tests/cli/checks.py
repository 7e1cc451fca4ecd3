"""What the Python CLI tests share: counting checks, and running a program
that must succeed. A test script beside this file imports it (its folder is
first on sys.path)."""
import subprocess
import sys


class Checks:
    """report(ok, what): counts a check; prints every failure, and every pass
    when show_passes. status() prints the counts and returns the exit status."""

    def __init__(self, show_passes=False):
        self.passed = self.failed = 0
        self.show_passes = show_passes

    def __call__(self, ok, what):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        if not ok or self.show_passes:
            print(("ok: " if ok else "FAIL: ") + what)
        return ok

    def status(self):
        print(f"{self.passed} passed, {self.failed} failed")
        return 1 if self.failed else 0


def run_ok(cmd, stdin=None):
    """The finished process; the test stops with the program's stderr when
    it does not exit 0 (a step the checks after it need)."""
    done = subprocess.run(cmd, input=stdin, capture_output=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr.decode(errors="replace")[:2000])
        sys.exit(f"exit {done.returncode}: {' '.join(map(str, cmd))}")
    return done
