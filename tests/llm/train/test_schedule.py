import pytest

from llm.train.schedule import lr_at

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`


def test_warmup_is_linear_from_the_first_step():
    assert [lr_at(s, 1.0, 4, 100) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]


def test_cosine_ends_exactly_at_the_floor_on_the_last_step():
    total = 50
    lrs = [lr_at(s, 2.0, 5, total, 0.1) for s in range(total)]
    assert lrs[-1] == pytest.approx(0.2)
    assert lrs[5 + (total - 1 - 5) // 2] == pytest.approx(1.1, rel=1e-2)  # half-way: (peak + floor) / 2
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))  # monotone after warmup


def test_no_warmup_starts_at_peak():
    assert lr_at(0, 3e-4, 0, 10) == pytest.approx(3e-4)
