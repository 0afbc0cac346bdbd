import math

from braincam.report.fmt import flatten, interval, num, pct, text, with_ci


def test_numbers_have_three_significant_digits():
    assert num(0.97345) == "0.973"
    assert num(12.345) == "12.3"
    assert num(0.0412) == "0.0412"
    assert num(1234.6) == "1235"
    assert num(1.0) == "1"
    assert num(394) == "394"


def test_missing_bool_and_collections():
    assert num(None) == "n/a"
    assert num(math.nan) == "n/a"
    assert num(True) == "yes"
    assert num({"gradcam": 0.51234, "layercam": None}) == "gradcam: 0.512, layercam: n/a"
    assert num([0.11111, 2]) == "0.111, 2"


def test_intervals_read_lo_hi():
    assert interval([0.9512, 0.9889]) == "[0.951, 0.989]"
    assert interval(None) == ""
    assert interval([None, 0.5]) == ""
    assert interval([0.1, 0.2, 0.3]) == ""
    assert with_ci(0.9367, [0.9, 0.96]) == "0.937 [0.900, 0.960]"
    assert with_ci(0.97, [0.953, 0.984]) == "0.970 [0.953, 0.984]"  # three decimals alike
    assert with_ci(1.0, [0.95, 1.0]) == "1.000 [0.950, 1.000]"
    assert with_ci(0.0, [0.0, 0.05]) == "0.000 [0.000, 0.050]"
    assert with_ci(0.6, None) == "0.6"


def test_percentages():
    assert pct(0.41) == "41%"
    assert pct(0.0666) == "6.7%"
    assert pct(1.0) == "100%"
    assert pct(None) == "n/a"


def test_settings_are_shown_exactly():
    assert text(0.00012345) == "0.00012345"
    assert text(["a", "b"]) == "a, b"
    assert text(None) == "none"


def test_flatten_joins_nested_keys():
    rows = flatten({"by_class": {"glioma": {"background": 0.2}}, "n_images": 3})
    assert rows == [("by class / glioma / background", 0.2), ("n images", 3)]
