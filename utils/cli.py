"""What the four command lines share: option values checked where they are parsed, and user errors told in
one line instead of a traceback.

    p.add_argument("--batch-size", type=positive_int)
    return run_reporting_user_errors("val.py", lambda: run(**vars(opt)), verbose=opt.verbose)

A user error is a bad option value or file, a missing package or a check that failed on the user's input
(ValueError, FileNotFoundError, ImportError and the tools' own check errors): the script ends with
"script: message" and exit status 1. Anything else is an internal error and keeps its traceback, as does
every error with --verbose.
"""
from __future__ import annotations

import argparse
from typing import Callable

USER_ERRORS = (ValueError, FileNotFoundError, ImportError)


def positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0)


def fraction(text: str) -> float:
    """A float in [0, 1] (score and IoU thresholds)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
    return value


def run_reporting_user_errors(script: str, run: Callable, verbose: bool = False, errors: tuple = ()):
    """run(), with a user error (USER_ERRORS and ``errors``) ending the process in one line and status 1;
    ``verbose`` keeps the traceback."""
    try:
        return run()
    except (*USER_ERRORS, *errors) as e:
        if verbose:
            raise
        raise SystemExit(f"{script}: {e}") from None
