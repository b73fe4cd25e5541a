"""Exit statuses of every forgetless command: what a script or CI job may branch on.

from contract.exits import EXIT_BAD_INPUT
print(f"error: {problem}", file=sys.stderr); return EXIT_BAD_INPUT
"""

EXIT_OK = 0
"""Everything asked for was done (a sweep: every trial finished or stopped early)."""
EXIT_FAILED = 1
"""The work ran and something failed (a sweep: at least one trial failed)."""
EXIT_BAD_INPUT = 2
"""Input was refused before any compute was spent: one line on stderr names the field, file or flag."""
EXIT_INTERRUPTED = 130
"""Stopped by Ctrl-C (SIGINT); what finished is kept and a re-run resumes the rest."""
