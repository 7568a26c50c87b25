class Encoder:
    """``encoder(metrics, step)``: the spool frame of a metrics record with ``names``, or None."""

    names: tuple[str, ...]

    def __init__(self, names: tuple[str, ...], template: bytes, value_offsets: tuple[int, ...],
                 time_offset: int, step_offset: int) -> None: ...
    def __call__(self, metrics: object, step: object, /) -> bytes | None: ...
