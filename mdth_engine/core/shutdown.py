"""How mdth's processes end: flush what they said, then leave without the interpreter's native teardown.

Arrow's and DuckDB's thread pools can still be joinable when C++ static destructors run at ``exit()``;
``std::terminate`` then aborts a process whose work is finished and published (SIGABRT, "terminate called
without an active exception", apache/arrow#34314). Every file mdth writes is published atomically before a
command returns, so skipping that teardown loses nothing, and the exit code stays the command's own.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys


def exit_code_of(exc: SystemExit) -> int:
    """The process exit code ``sys.exit`` would give: None is 0, a message is printed and gives 1."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def leave(code: int) -> None:
    """Run Python's exit handlers, flush stdout, stderr and logging, then ``os._exit(code)``."""
    try:
        atexit._run_exitfuncs()  # temp-folder finalizers and other Python-level cleanups still run
    finally:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BrokenPipeError:  # a closed pipe (`mdth gaps | head`) has nothing left to say
                pass
            except (OSError, ValueError):  # a full disk under `> out.json`: the output is cut, so say so
                code = code or 120  # what CPython's own exit gives when the final flush fails
        os._exit(code)
