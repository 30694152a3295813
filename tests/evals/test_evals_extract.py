import pytest

from evals.extract import canonical_gold, canonical_number, extract_answer, is_correct, last_boxed


@pytest.mark.parametrize("text,expected", [
    ("3 + 4 = 7\n#### 7", "7"),
    ("#### 1,234\n", "1234"),
    ("####-5", "-5"),
    ("#### $18.00", "18"),
    ("#### 3 then #### 4", "4"),  # the last answer line wins
    ("the answer is 7", None),  # strict: no marker, no credit
    ("####", None),
    ("12-3=9 #### 9.", "9"),
])
def test_gsm8k(text, expected):
    assert extract_answer(text, "gsm8k") == expected


@pytest.mark.parametrize("text,expected", [
    ("The answer is 1,234.", "1234"),
    ("so 3-5 = -2", "-2"),
    ("range 3-5", "5"),  # a hyphen between numbers is not a minus sign
    ("total $1,000.50 dollars", "1000.5"),
    ("x=-5", "-5"),
    ("It is .5", "0.5"),
    ("7.0", "7"),
    ("-0", "0"),
    ("1,2,3", "3"),
    ("no numbers here", None),
])
def test_last_number(text, expected):
    assert extract_answer(text, "last_number") == expected


@pytest.mark.parametrize("text,expected", [
    (r"so \boxed{\frac{1}{2}}", r"\frac{1}{2}"),
    (r"\boxed{ 1,000 }.", "1000"),
    (r"\boxed{5} then finally \boxed{\dfrac{3}{4}}", r"\frac{3}{4}"),
    (r"\boxed{x^{2}", None),  # unclosed
    (r"\boxed {42^\circ}", "42"),
    (r"\fbox{\text{(B)}}", "(B)"),
    (r"$\boxed{\$5.00}$", "5"),
    (r"\boxed{\left( 1, 2 \right)}", "(1,2)"),
    ("no box", None),
])
def test_boxed(text, expected):
    assert extract_answer(text, "boxed") == expected


def test_last_boxed_nested():
    assert last_boxed(r"\boxed{a{b{c}}d} x") == "a{b{c}}d"


def test_exact_normalises_whitespace_only():
    assert extract_answer("  Paris \n\t France ", "exact") == "Paris France"
    assert not is_correct(extract_answer("paris", "exact"), "Paris", "exact")


@pytest.mark.parametrize("pred_text,gold,rule,ok", [
    ("#### 1000", "1,000", "gsm8k", True),
    ("#### 72", "She sold 48 + 24 = 72 clips.\n#### 72", "gsm8k", True),  # full GSM8K solution as gold
    ("#### 7.50", "7.5", "gsm8k", True),
    ("answer 7", "7", "gsm8k", False),
    ("so it is 12 apples", "12", "last_number", True),
    ("12 apples, not 13", "12", "last_number", False),
    (r"\boxed{\dfrac{1}{2}}", r"\frac{1}{2}", "boxed", True),
    (r"\boxed{0.5}", r"\boxed{.5}", "boxed", True),
])
def test_is_correct(pred_text, gold, rule, ok):
    assert is_correct(extract_answer(pred_text, rule), gold, rule) is ok


def test_unknown_rule():
    with pytest.raises(ValueError, match="unknown answer rule"):
        extract_answer("1", "mystery")  # type: ignore[arg-type]


def test_canonical_number_and_gold():
    assert canonical_number(" 1,000.50 ") == "1000.5"
    assert canonical_number("abc") == "abc"
    assert canonical_gold("  a   b ", "exact") == "a b"
