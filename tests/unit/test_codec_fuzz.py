"""Property-based fuzzing of every inbound codec from the CONTRACTS.md examples (hypothesis).

For any bytes and headers built from a real example (see tests/fuzzing.py), a codec either
returns the typed message, which then holds only storable text, sane numbers and plausible
times, or refuses it with `InvalidMessage` and a known reason; any other exception is a crash
that would have cost the consumer a batch. Fixed seed (derandomize) and 300 cases per example
(3,000 in all) so `make test` is repeatable; benchmarks/fuzz.py runs 100,000.
"""
import pytest
from hypothesis import HealthCheck, given, settings

from msd.errors import InvalidMessage
from tests.fuzzing import CASES, check_accepted, hostile_body, hostile_headers, parse_case, reason_is_known

FUZZ = settings(max_examples=300, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("kind, name, example", CASES, ids=[name for _, name, _ in CASES])
def test_no_payload_crashes_a_codec_or_slips_through_unchecked(kind, name, example):
    @FUZZ
    @given(body=hostile_body(example), headers=hostile_headers)
    def property_holds(body, headers):
        try:
            message = parse_case(kind, body, headers)
        except InvalidMessage as exc:
            assert reason_is_known(exc.reason), exc.reason
            return
        check_accepted(kind, message)

    property_holds()
