"""Says loudly, at the end of the pytest run, when the llama-server tests did not run.

They need a llama-server binary built on this machine (scripts/build_llama_server, called by
``scripts/setup --test``). Where it is missing they skip, and this banner names the reason and
the fix: a skipped real-server test must never look like a passed one.
"""

from __future__ import annotations

MARK = "test_llama_"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if MARK in r.nodeid]
    if not skipped:
        return
    reasons = sorted({str(r.longrepr[2]) if isinstance(r.longrepr, tuple) else str(r.longrepr)
                      for r in skipped})
    bar = "!" * 78
    terminalreporter.write_line(bar, red=True, bold=True)
    terminalreporter.write_line(f"LLAMA-SERVER TESTS DID NOT RUN: {len(skipped)} skipped "
                                "(the openai and anthropic kinds are unproven against a real "
                                "server in this run)", red=True, bold=True)
    for reason in reasons:
        terminalreporter.write_line(f"  why: {reason}", red=True)
    terminalreporter.write_line("  fix: scripts/build_llama_server (once per machine, ~12 min)",
                                red=True)
    terminalreporter.write_line(bar, red=True, bold=True)
