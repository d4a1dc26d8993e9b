"""cu.timing.ratio_verdict: the sentence printed under the timing cells of notebooks 01 and 02."""

from course_utils.timing import ratio_verdict

WORDS = dict(above="A is slower", below="A is faster", every="in every round", count="in {k} of the {n} rounds")


def test_every_ratio_beyond_the_threshold_names_the_direction():
    assert ratio_verdict([0.5, 0.6, 0.7], **WORDS) == "A is faster in every round"
    assert ratio_verdict([1.3, 2.0], **WORDS) == "A is slower in every round"


def test_one_direction_but_some_within_the_noise_says_how_many_are_beyond():
    # notebook 01's run: all five rounds below 1, three of them below 0.8
    verdict = ratio_verdict([0.54, 0.57, 0.77, 0.87, 0.89], **WORDS)
    assert verdict.startswith("A is faster in every round, but beyond the timing noise")
    assert verdict.endswith("in 3 of the 5 rounds")
    # notebook 02's run: all above 1, four above 1.25
    verdict = ratio_verdict([1.03, 1.30, 1.40, 1.48, 1.70], above="slower", below="faster", every="at every d",
                            count="at {k} of the {n} values of d")
    assert verdict == "slower at every d, but beyond the timing noise (a ratio outside 0.8-1.25) only at 4 of the 5 values of d"


def test_all_within_the_noise_is_no_measurable_difference():
    assert ratio_verdict([0.95, 1.05, 1.2], **WORDS).startswith("no measurable difference")
    assert ratio_verdict([0.9, 0.95], **WORDS).startswith("no measurable difference")   # one side, none beyond


def test_both_directions_is_no_consistent_difference():
    assert ratio_verdict([0.5, 1.5], **WORDS) == "no consistent difference (the ratios point both ways)"
    assert ratio_verdict([0.7, 1.1], **WORDS) == "no consistent difference (the ratios point both ways)"
