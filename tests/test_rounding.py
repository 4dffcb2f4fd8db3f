"""utils/rounding.py: hand-computed multiples."""

from utils.rounding import round_up


def test_round_up_hand_values():
    assert round_up(100, 32) == 128
    assert round_up(128, 32) == 128  # a multiple stays
    assert round_up(0, 32) == 0
    assert round_up(72.5, 16) == 80  # a scaled (float) side
    assert round_up(0.25 * 64, 8) == 16  # a width-multiplied channel count
    assert isinstance(round_up(33.0, 8), int)
