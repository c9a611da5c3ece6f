"""The conformance battery on the models of ``jdl.models`` (the layers' run in ``test_battery.py``).

A separate file so that the test suite's two workers (``--dist loadfile``) share the battery.
"""
import pytest

from tests.conformance.descriptors import CASES
from tests.conformance.test_battery import (
    build, test_float64, test_jit_vmap_grad_and_bfloat16, test_nan_in_gives_nan_out, test_params_tree_matches_its_golden_file,
    test_refusals, test_same_key_same_numbers,
)

# Collected here, with this file's ``built`` fixture.
__all__ = ["test_float64", "test_jit_vmap_grad_and_bfloat16", "test_nan_in_gives_nan_out",
           "test_params_tree_matches_its_golden_file", "test_refusals", "test_same_key_same_numbers"]


@pytest.fixture(scope="module", params=[case for case in CASES if case.model], ids=lambda case: case.name)
def built(request):
    return build(request)
