"""What users pass, as the run's config keeps it."""

from __future__ import annotations

import pytest

from runyard.exec.options import param_value
from runyard.store import jsonvalues


@pytest.mark.parametrize(("text", "kept"), [
    ("0.1", 0.1), ("3", 3), ("true", True), ("adam", "adam"), ("1e-4", 1e-4),
    ("123456789012345678901234567890", "123456789012345678901234567890"),  # no 64-bit column holds it
    (str(2**63 - 1), 2**63 - 1), (str(-(2**63)), -(2**63)),
])
def test_a_param_is_a_number_where_it_reads_as_one_the_store_can_hold(text: str, kept: object) -> None:
    value = param_value(text)
    assert value == kept and type(value) is type(kept)
    assert jsonvalues.loads(jsonvalues.dumps({"p": value})) == {"p": kept}  # storable: no traceback
