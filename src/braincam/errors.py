"""User-facing errors. The CLI prints ``error: <message>`` on one line for these,
never a traceback."""


class BraincamError(Exception):
    """A problem with the user's input or environment, explained in one sentence."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text (library errors can run on for lines), else its
    type's name: what a one-line ``BraincamError`` quotes of a cause."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_mismatch(exc: BaseException) -> str:
    """What ``load_state_dict`` found wrong, in one line: its first ``size mismatch for ...``
    (or missing/unexpected keys) line rather than its header, which names no tensor."""
    lines = [line.strip() for line in str(exc).strip().splitlines()]
    detail = next((line for line in lines[1:] if line), None)
    return (detail or first_line(exc))[:300]


def check_seed(value: int | None, option: str = "--seed") -> None:
    """A one-line error for a seed numpy and scikit-learn refuse (outside ``[0, 2**32)``);
    None is no seed."""
    if value is not None and not 0 <= value < 2**32:
        raise BraincamError(f"{option} must be in [0, 2**32), got {value}")
