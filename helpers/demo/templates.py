"""Question templates and misconception types for the demo dataset (see helpers/demo/generate.py).

A :class:`Construct` samples random parameters, writes the question text and computes the correct
answer; each of its :class:`MisconceptionType` s computes the wrong answer that the misconception
produces from the same parameters. Answers are "raw" values (int, Fraction, tuple or str) that the
construct's ``fmt`` turns into Eedi-style LaTeX text; ``None`` means "this type does not apply to
these numbers" (the generator then picks another distractor).

Why this file is long (~1,200 lines): it is data, not logic: one short class or table per question
type, each with its misconceptions; splitting it would scatter a catalogue that is read top to
bottom when a type is added.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction as F
from math import gcd
from random import Random
from typing import Any, Callable, Optional

Raw = Any
Params = dict


# --------------------------------------------------------------------------------------- formatting
def m(s) -> str:
    """Inline maths, Eedi style: ``\\( s \\)``."""
    return f"\\( {s} \\)"


def display(s) -> str:
    """Display maths on its own lines, as in the real question texts."""
    return f"\\[\n{s}\n\\]"


def M(template, p) -> str:
    """Inline maths from a %-template filled with the question's parameters."""
    return m(template % p)


def D(template, p) -> str:
    return display(template % p)


def fr(n, d) -> str:
    return "\\frac{%s}{%s}" % (n, d)


def dec(v) -> Optional[str]:
    """Exact decimal text of a rational (``"2.35"``, ``"-4"``); None when it does not terminate."""
    v = F(v)
    if v.denominator == 1:
        return str(v.numerator)
    d = v.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    if d != 1:
        return None
    k = 0
    while (v * 10 ** k).denominator != 1:
        k += 1
    digits = f"{abs(v.numerator) * 10 ** k // v.denominator:0{k + 1}d}"
    return ("-" if v < 0 else "") + digits[:-k] + "." + digits[-k:]


def dp2(v) -> str:
    """A multiple of 0.01 with exactly two decimal places (``2.70``), as a rounding answer is written."""
    cents = F(v) * 100
    if cents.denominator != 1:
        raise ValueError(f"{v} is not a multiple of 0.01")
    c = cents.numerator
    return f"{'-' if c < 0 else ''}{abs(c) // 100}.{abs(c) % 100:02d}"


def lin(coef, const, var="x") -> str:
    """``3 x+2`` / ``x-1`` / ``-2 x`` in Eedi's spacing."""
    if coef == 0:
        head = ""
    elif coef == 1:
        head = var
    elif coef == -1:
        head = "-" + var
    else:
        head = f"{coef} {var}"
    if const == 0:
        return head or "0"
    return f"{head}{'+' if const > 0 and head else ''}{const}"


def num_fmt(unit="", pre="") -> Callable[[Raw, Params], Optional[str]]:
    def f(raw, p):
        s = raw if isinstance(raw, str) else dec(raw)
        return None if s is None else m(f"{pre}{s}{unit}")
    return f


def frac_fmt(raw, p) -> Optional[str]:
    """Fraction -> simplest form (integer when whole); tuple (n, d) -> shown unsimplified."""
    if isinstance(raw, tuple):
        n, d = raw
        if d <= 0:
            return None
    else:
        v = F(raw)
        if v.denominator == 1:
            return m(v.numerator)
        n, d = v.numerator, v.denominator
    return m(("-" if n < 0 else "") + fr(abs(n), d))


def expr_fmt(raw, p) -> Optional[str]:
    return None if raw is None else m(raw)


def plain_fmt(raw, p) -> Optional[str]:
    return raw


def std_fmt(raw, p) -> Optional[str]:
    s, k = raw
    s = dec(s)
    return None if s is None else m(f"{s} \\times 10^{{{k}}}")


def num_slip(v, rng: Random):
    """A generic slip: the correct number nudged or scaled."""
    v = F(v)
    if v.denominator == 1:
        return rng.choice([v + 1, v - 1, v + 2, v - 2, v + 10, v - 10, v * 10, -v if v < 0 else v + 3])
    return rng.choice([v + F(1, 10), v - F(1, 10), v * 10, v / 10, v + 1, v - 1])


def frac_slip(v, rng: Random):
    n, d = v if isinstance(v, tuple) else (F(v).numerator, F(v).denominator)
    return rng.choice([(n + 1, d), (n, d + 1), (max(n - 1, 1), d), (d, n), (n + d, d)])


# ------------------------------------------------------------------------------------ data classes
@dataclass(frozen=True)
class MisconceptionType:
    key: str
    name: str
    wrong: Callable[[Params], Raw]


@dataclass(frozen=True)
class Construct:
    key: str
    name: str
    subject: str
    sample: Callable[[Random], Params]
    question: Callable[[Params], str]
    correct: Callable[[Params], Raw]
    types: tuple
    fmt: Callable[[Raw, Params], Optional[str]] = num_fmt()
    slip: Optional[Callable[[Params, Random], Raw]] = None

    def answer_text(self, raw, p) -> Optional[str]:
        if raw is None:
            return None
        try:
            return self.fmt(raw, p)
        except (ZeroDivisionError, ValueError):
            return None

    def slip_raw(self, p, rng: Random):
        if self.slip is not None:
            return self.slip(p, rng)
        c = self.correct(p)
        if self.fmt is frac_fmt:
            return frac_slip(c, rng)
        if isinstance(c, (int, F)):
            return num_slip(c, rng)
        raise ValueError(f"construct {self.key!r} needs a slip function")


CONSTRUCTS: list[Construct] = []


def construct(key, name, subject, sample, question, correct, types, fmt=None, slip=None):
    ts = tuple(MisconceptionType(k, n, fn) for k, n, fn in types)
    CONSTRUCTS.append(Construct(key, name, subject, sample, question, correct, ts,
                                fmt or num_fmt(), slip))


def safe(fn):
    """Wrap a type function so arithmetic failures mean "does not apply"."""
    def g(p):
        try:
            return fn(p)
        except (ZeroDivisionError, ValueError):
            return None
    return g


def pick(rng: Random, options):
    return options[rng.randrange(len(options))]


VARS = ["x", "y", "m", "n", "p", "t", "a", "b"]
NAMES = ["Tom", "Katie", "Aisha", "Sam", "Priya", "Jo", "Ben", "Mei", "Omar", "Lucy"]
CM, CM2, CM3, DEG = " \\mathrm{~cm}", " \\mathrm{~cm}^{2}", " \\mathrm{~cm}^{3}", "^{\\circ}"


def half_up(v, unit) -> F:
    """Round v to a multiple of unit, halves up (Python's round() is banker's rounding)."""
    v, unit = F(v), F(unit)
    q = v / unit
    return (q.numerator * 2 + q.denominator) // (2 * q.denominator) * unit


def trunc(v, unit) -> F:
    v, unit = F(v), F(unit)
    return (v / unit).numerator // (v / unit).denominator * unit


def sig_unit(v, sf) -> F:
    """The place value unit for rounding |v| to sf significant figures."""
    v = abs(F(v))
    e = 0
    while F(10) ** (e + 1) <= v:
        e += 1
    while F(10) ** e > v:
        e -= 1
    return F(10) ** (e - sf + 1)


# ------------------------------------------------------------------------------------- templates
# Fractions -----------------------------------------------------------------------------------------
def _two_fracs(rng, lo=2, hi=9):
    while True:
        b, d = rng.randint(lo, hi), rng.randint(lo, hi)
        if b != d:
            return dict(a=rng.randint(1, b - 1), b=b, c=rng.randint(1, d - 1), d=d, v=rng.randrange(3))


def _frac_q(op):
    def q(p):
        e = f"{fr(p['a'], p['b'])} {op} {fr(p['c'], p['d'])}"
        return [f"Calculate:\n{display(e)}", f"What is {m(e)} ?",
                f"Work out {m(e)}\nGive your answer in its simplest form."][p["v"]]
    return q


construct(
    "frac_add", "Add fractions with different denominators", "Adding and Subtracting Fractions",
    _two_fracs, _frac_q("+"), lambda p: F(p["a"], p["b"]) + F(p["c"], p["d"]), [
        ("frac_add_across", "Adds the numerators and the denominators when adding fractions",
         lambda p: (p["a"] + p["c"], p["b"] + p["d"])),
        ("frac_add_mult_den", "When adding fractions, adds the numerators and multiplies the denominators",
         lambda p: (p["a"] + p["c"], p["b"] * p["d"])),
        ("frac_add_larger_den", "When adding fractions with different denominators, keeps the larger "
         "denominator and just adds the numerators", lambda p: (p["a"] + p["c"], max(p["b"], p["d"]))),
    ], fmt=frac_fmt)


def _sub_fracs(rng):
    while True:
        p = _two_fracs(rng)
        if p["b"] > p["d"] and p["a"] > p["c"] and F(p["a"], p["b"]) > F(p["c"], p["d"]):
            return p


construct(
    "frac_sub", "Subtract fractions with different denominators", "Adding and Subtracting Fractions",
    _sub_fracs, _frac_q("-"), lambda p: F(p["a"], p["b"]) - F(p["c"], p["d"]), [
        ("frac_sub_across", "Subtracts the numerators and subtracts the denominators when subtracting fractions",
         lambda p: (p["a"] - p["c"], p["b"] - p["d"])),
        ("frac_sub_first_den", "When subtracting fractions with different denominators, subtracts the "
         "numerators and keeps the first denominator", lambda p: (p["a"] - p["c"], p["b"])),
    ], fmt=frac_fmt)

construct(
    "frac_mult", "Multiply proper fractions in the form: Fraction × Fraction", "Multiplying Fractions",
    _two_fracs, _frac_q("\\times"), lambda p: F(p["a"] * p["c"], p["b"] * p["d"]), [
        ("frac_mult_divides", "Uses the method for dividing fractions when multiplying fractions",
         lambda p: (p["a"] * p["d"], p["b"] * p["c"])),
        ("frac_mult_add_den", "When multiplying fractions, multiplies the numerators but adds the denominators",
         lambda p: (p["a"] * p["c"], p["b"] + p["d"])),
        ("frac_mult_common_den", "Finds a common denominator and then multiplies only the numerators "
         "when multiplying fractions", lambda p: (p["a"] * p["d"] * p["c"] * p["b"], p["b"] * p["d"])),
    ], fmt=frac_fmt)

construct(
    "frac_div", "Divide proper fractions in the form: Fraction ÷ Fraction", "Dividing Fractions",
    _two_fracs, _frac_q("\\div"), lambda p: F(p["a"] * p["d"], p["b"] * p["c"]), [
        ("frac_div_flip_first", "Takes the reciprocal of the first fraction instead of the second when "
         "dividing fractions", lambda p: (p["b"] * p["c"], p["a"] * p["d"])),
        ("frac_div_multiplies", "Multiplies the fractions instead of dividing when dividing fractions",
         lambda p: (p["a"] * p["c"], p["b"] * p["d"])),
    ], fmt=frac_fmt)


def _frac_amount(rng):
    b = rng.randint(3, 10)
    return dict(a=rng.randint(2, b - 1), b=b, n=b * rng.randint(2, 12), v=rng.randrange(2))


construct(
    "frac_amount", "Calculate a non-unit fraction of an amount", "Fractions of an Amount", _frac_amount,
    lambda p: [f"What is {m(fr(p['a'], p['b']))} of {m(p['n'])} ?",
               f"{NAMES[p['n'] % 10]} has {m(p['n'])} stickers and gives away {m(fr(p['a'], p['b']))} of them.\n"
               "How many stickers are given away?"][p["v"]],
    lambda p: p["n"] // p["b"] * p["a"], [
        ("frac_amount_unit_only", "Finds the unit fraction of an amount but forgets to multiply by the numerator",
         lambda p: p["n"] // p["b"]),
        ("frac_amount_swapped", "Divides by the numerator and multiplies by the denominator when finding a "
         "fraction of an amount", lambda p: F(p["n"] * p["b"], p["a"])),
        ("frac_amount_no_divide", "Multiplies the amount by the numerator but does not divide by the denominator",
         lambda p: p["n"] * p["a"]),
    ])


def _mixed(rng):
    d = rng.randint(3, 9)
    return dict(w=rng.randint(2, 9), n=rng.randint(1, d - 1), d=d)


construct(
    "mixed_to_improper", "Convert from mixed number fractions to improper fractions",
    "Converting Mixed Number and Improper Fractions", _mixed,
    lambda p: f"Write {m(str(p['w']) + ' ' + fr(p['n'], p['d']))} as an improper fraction.",
    lambda p: (p["w"] * p["d"] + p["n"], p["d"]), [
        ("mixed_add_whole", "Adds the whole number to the numerator when converting a mixed number to an "
         "improper fraction", lambda p: (p["w"] + p["n"], p["d"])),
        ("mixed_forget_num", "Multiplies the whole number by the denominator but forgets to add the numerator "
         "when converting to an improper fraction", lambda p: (p["w"] * p["d"], p["d"])),
        ("mixed_mult_num", "Multiplies the whole number by the numerator and adds the denominator when "
         "converting to an improper fraction", lambda p: (p["w"] * p["n"] + p["d"], p["d"])),
    ], fmt=frac_fmt)

# BIDMAS and powers -----------------------------------------------------------------------------------
construct(
    "bidmas_add_mult", "Use the order of operations to carry out calculations involving addition and "
    "multiplication", "BIDMAS",
    lambda rng: dict(a=rng.randint(2, 20), b=rng.randint(2, 9), c=rng.randint(2, 9), v=rng.randrange(2)),
    lambda p: [D("%(a)s+%(b)s \\times %(c)s", p) + "\nWhat is the answer?",
               "Calculate: " + M("%(a)s+%(b)s \\times %(c)s", p)][p["v"]],
    lambda p: p["a"] + p["b"] * p["c"], [
        ("bidmas_left_to_right", "Carries out operations from left to right regardless of priority order",
         lambda p: (p["a"] + p["b"]) * p["c"]),
        ("bidmas_adds_all", "Ignores the multiplication sign and adds all the numbers",
         lambda p: p["a"] + p["b"] + p["c"]),
    ])

construct(
    "bidmas_power", "Use the order of operations to carry out calculations involving powers", "BIDMAS",
    lambda rng: dict(a=rng.randint(2, 9), b=rng.randint(2, 9)),
    lambda p: "What is the value of " + M("%(a)s \\times %(b)s^{2}", p) + " ?",
    lambda p: p["a"] * p["b"] ** 2, [
        ("bidmas_power_product", "Applies the power to the whole product instead of only the number it is "
         "attached to", lambda p: (p["a"] * p["b"]) ** 2),
        ("bidmas_index_multiplier", "Treats the index as a multiplier when evaluating a power within a "
         "calculation", lambda p: p["a"] * p["b"] * 2),
    ])


def _sub_add(rng):
    b, c = rng.randint(2, 15), rng.randint(2, 15)
    return dict(a=b + c + rng.randint(3, 30), b=b, c=c)


construct(
    "bidmas_sub_add", "Use the order of operations to carry out calculations involving addition and "
    "subtraction", "BIDMAS", _sub_add,
    lambda p: NAMES[p["a"] % 10] + " works out:\n" + D("%(a)s-%(b)s+%(c)s", p) + "\n"
              "What answer should be given?",
    lambda p: p["a"] - p["b"] + p["c"], [
        ("bidmas_add_before_sub", "Believes addition must always be done before subtraction",
         lambda p: p["a"] - (p["b"] + p["c"])),
    ])

construct(
    "square", "Calculate the square of a number", "Squares, Cubes, etc",
    lambda rng: dict(n=rng.randint(3, 15)), lambda p: "What is " + M("%(n)s^{2}", p) + " ?",
    lambda p: p["n"] ** 2, [
        ("square_doubles", "Believes squaring a number is the same as multiplying it by 2",
         lambda p: 2 * p["n"]),
        ("square_index_digit", "Reads the index as a digit written after the number",
         lambda p: int(f"{p['n']}2")),
    ])

construct(
    "cube", "Calculate the cube of a number", "Squares, Cubes, etc",
    lambda rng: dict(n=rng.randint(2, 6)), lambda p: "What is " + M("%(n)s^{3}", p) + " ?",
    lambda p: p["n"] ** 3, [
        ("cube_times_three", "Believes cubing a number means multiplying it by 3", lambda p: 3 * p["n"]),
        ("cube_as_square", "Squares the number instead of cubing it", lambda p: p["n"] ** 2),
    ])

construct(
    "square_root", "Calculate the square root of a perfect square", "Square Roots, Cube Roots, etc",
    lambda rng: dict(n=rng.randint(4, 15)), lambda p: "What is " + m("\\sqrt{%d}" % p["n"] ** 2) + " ?",
    lambda p: p["n"], [
        ("sqrt_halves", "Halves the number instead of finding the square root", lambda p: F(p["n"] ** 2, 2)),
        ("sqrt_squares", "Squares the number instead of finding its square root", lambda p: p["n"] ** 4),
    ])

# Written methods ---------------------------------------------------------------------------------------
def _digits(v, n):
    return [int(c) for c in f"{v:0{n}d}"]


def _col_sub(rng):
    while True:
        x, y = rng.randint(300, 999), rng.randint(100, 299)
        dx, dy = _digits(x, 3), _digits(y, 3)
        if any(a < b for a, b in zip(dx[1:], dy[1:])) and x > y:
            return dict(x=x, y=y)


def _sub_no_reduce(p):
    dx, dy = _digits(p["x"], 3), _digits(p["y"], 3)
    return int("".join(str(a - b if a >= b else a + 10 - b) for a, b in zip(dx, dy)))


construct(
    "column_sub", "Subtract integers up to 3 digits using a written method where borrowing is needed",
    "Written Subtraction", _col_sub,
    lambda p: "Use the column method to calculate:\n" + D("%(x)s-%(y)s", p),
    lambda p: p["x"] - p["y"], [
        ("colsub_smaller_from_larger", "Subtracts the smaller digit from the larger digit in each column, "
         "whichever number it is in", lambda p: int("".join(
             str(abs(a - b)) for a, b in zip(_digits(p["x"], 3), _digits(p["y"], 3))))),
        ("colsub_no_reduce", "When borrowing in column subtraction, does not reduce the digit in the next column",
         _sub_no_reduce),
    ])


def _col_add(rng):
    while True:
        x, y = rng.randint(100, 4999), rng.randint(100, 4999)
        if any(a + b >= 10 for a, b in zip(_digits(x, 4), _digits(y, 4))):
            return dict(x=x, y=y)


construct(
    "column_add", "Add integers up to 4 digits using a written method where carrying is needed",
    "Written Addition", _col_add,
    lambda p: "Use the column method to calculate:\n" + D("%(x)s+%(y)s", p),
    lambda p: p["x"] + p["y"], [
        ("coladd_no_carry", "Does not carry when adding in columns, writing only the ones digit of each "
         "column total", lambda p: int("".join(
             str((a + b) % 10) for a, b in zip(_digits(p["x"], 4), _digits(p["y"], 4))))),
        ("coladd_writes_totals", "Writes every column total in full instead of carrying", lambda p: int("".join(
            str(a + b) for a, b in zip(_digits(p["x"], 4), _digits(p["y"], 4))))),
    ])

# Averages ------------------------------------------------------------------------------------------------
def _data_list(rng, n):
    return [rng.randint(1, 30) for _ in range(n)]


def _lst(p):
    return m(", ".join(str(v) for v in p["vals"]))


construct(
    "mean", "Calculate the mean as an average from a list of data",
    "Averages (mean, median, mode) from a List of Data", lambda rng: dict(vals=_data_list(rng, 5)),
    lambda p: f"What is the mean of these numbers?\n{_lst(p)}", lambda p: F(sum(p["vals"]), len(p["vals"])), [
        ("mean_gives_median", "Finds the median instead of the mean", lambda p: sorted(p["vals"])[2]),
        ("mean_wrong_count", "Divides by one less than the number of values when calculating the mean",
         lambda p: F(sum(p["vals"]), len(p["vals"]) - 1)),
        ("mean_no_divide", "Adds up the values but does not divide by how many there are when finding the mean",
         lambda p: sum(p["vals"])),
    ])

construct(
    "median", "Calculate the median as an average from an odd numbered list of data",
    "Averages (mean, median, mode) from a List of Data", lambda rng: dict(vals=_data_list(rng, 5)),
    lambda p: f"Here are some numbers:\n{_lst(p)}\nWhat is the median?", lambda p: sorted(p["vals"])[2], [
        ("median_unordered", "Finds the middle value of the list without putting the data in order first",
         lambda p: p["vals"][2]),
        ("median_gives_mean", "Calculates the mean when asked for the median",
         lambda p: F(sum(p["vals"]), len(p["vals"]))),
        ("median_gives_position", "Gives the position of the median instead of its value",
         lambda p: (len(p["vals"]) + 1) // 2),
    ])

construct(
    "range", "Calculate the range from a list of data", "Range and Interquartile Range from a List of Data",
    lambda rng: dict(vals=_data_list(rng, 6), u=rng.randrange(3)),
    lambda p: f"The heights of some plants, in {['cm', 'mm', 'm'][p['u']]}, are:\n{_lst(p)}\n"
              "What is the range of the heights?", lambda p: max(p["vals"]) - min(p["vals"]), [
        ("range_gives_max", "Gives the largest value instead of the range", lambda p: max(p["vals"])),
        ("range_last_minus_first", "Subtracts the first value in the list from the last value instead of the "
         "smallest from the largest", lambda p: p["vals"][-1] - p["vals"][0]),
    ])


def _mode_list(rng):
    while True:
        mode = rng.randint(2, 20)
        others = rng.sample([v for v in range(1, 25) if v != mode], 4)
        vals = [mode] * 3 + others
        rng.shuffle(vals)
        if max(vals) != mode:
            return dict(vals=vals)


construct(
    "mode", "Identify the mode from a list of data", "Averages (mean, median, mode) from a List of Data",
    _mode_list, lambda p: f"What is the mode of this data?\n{_lst(p)}",
    lambda p: max(set(p["vals"]), key=p["vals"].count), [
        ("mode_gives_frequency", "Gives the frequency of the mode instead of the mode itself", lambda p: 3),
        ("mode_gives_largest", "Thinks the mode is the largest value in the data", lambda p: max(p["vals"])),
    ])

# Percentages -----------------------------------------------------------------------------------------------
def _pct(rng):
    return dict(pc=5 * rng.randint(1, 18), n=20 * rng.randint(1, 20), v=rng.randrange(2))


construct(
    "pct_amount", "Calculate percentage of an amount mentally where the percent is a multiple of 5",
    "Percentages of an Amount", _pct,
    lambda p: ["What is " + M("%(pc)s \\%%", p) + " of " + M("%(n)s", p) + " ?",
               "Find " + M("%(pc)s \\%%", p) + " of " + M("£ %(n)s", p)][p["v"]],
    lambda p: F(p["pc"] * p["n"], 100), [
        ("pct_divides_by_percent", "Divides the amount by the percentage instead of finding that percentage of it",
         lambda p: F(p["n"], p["pc"])),
        ("pct_divides_by_ten", "Believes dividing by 10 finds any percentage of an amount",
         lambda p: F(p["n"], 10)),
        ("pct_adds_on", "Finds the percentage of the amount and then adds it on to the original amount",
         lambda p: p["n"] + F(p["pc"] * p["n"], 100)),
    ], fmt=lambda raw, p: num_fmt(pre="£ " if p["v"] else "")(raw, p))

construct(
    "pct_increase", "Increase an amount by a percentage", "Percentage Increase and Decrease", _pct,
    lambda p: "A jacket costs " + M("£ %(n)s", p) + ". Its price goes up by " + M("%(pc)s \\%%", p) + ".\n"
              "What is the new price?",
    lambda p: p["n"] + F(p["pc"] * p["n"], 100), [
        ("pctinc_adds_percent", "Adds the percentage as a number instead of finding that percentage of the amount",
         lambda p: p["n"] + p["pc"]),
        ("pctinc_no_add", "Finds the percentage increase but does not add it to the original amount",
         lambda p: F(p["pc"] * p["n"], 100)),
    ], fmt=num_fmt(pre="£ "))


def _dec_pct(rng):
    while True:
        k = rng.randint(11, 99)
        if k % 10:
            return dict(k=k)


construct(
    "decimal_to_pct", "Convert decimals less than 1 with 2 decimal places to percentages",
    "Converting between Decimals and Percentages", _dec_pct,
    lambda p: f"Write {m(dec(F(p['k'], 100)))} as a percentage.", lambda p: p["k"], [
        ("dec2pct_times_ten", "Multiplies by 10 instead of 100 when converting a decimal to a percentage",
         lambda p: F(p["k"], 10)),
        ("dec2pct_keeps_decimal", "Writes the decimal with a percentage sign without multiplying by 100",
         lambda p: dec(F(p["k"], 100))),
    ], fmt=num_fmt(unit=" \\%"))

# Negative numbers ----------------------------------------------------------------------------------------------
construct(
    "neg_sub_neg", "Carry out subtraction problems involving one negative integer",
    "Adding and Subtracting Negative Numbers", lambda rng: dict(a=rng.randint(2, 15), b=rng.randint(2, 15)),
    lambda p: "What is the answer to " + M("%(a)s-(-%(b)s)", p) + " ?", lambda p: p["a"] + p["b"], [
        ("neg_sub_neg_as_sub", "Believes subtracting a negative number is the same as subtracting a positive "
         "number", lambda p: p["a"] - p["b"]),
        ("neg_sub_neg_negative", "Believes subtracting a negative number always gives a negative answer",
         lambda p: -(p["a"] + p["b"])),
    ])

construct(
    "neg_start_sub", "Carry out subtraction from a negative integer", "Adding and Subtracting Negative Numbers",
    lambda rng: dict(a=rng.randint(2, 15), b=rng.randint(2, 15), v=rng.randrange(2)),
    lambda p: ["Calculate " + M("-%(a)s-%(b)s", p),
               "The temperature is " + M("-%(a)s^{\\circ} \\mathrm{C}", p) + ". It falls by "
               + M("%(b)s^{\\circ} \\mathrm{C}", p) + ".\nWhat is the new temperature, in "
               + m("^{\\circ} \\mathrm{C}") + " ?"][p["v"]],
    lambda p: -p["a"] - p["b"], [
        ("neg_start_towards_zero", "Counts towards zero when subtracting from a negative number",
         lambda p: -p["a"] + p["b"]),
        ("neg_start_ignores_sign", "Ignores the negative sign of the starting number when subtracting from a "
         "negative number", lambda p: p["a"] + p["b"]),
    ])

construct(
    "neg_times_neg", "Multiply two negative integers", "Multiplying and Dividing Negative Numbers",
    lambda rng: dict(a=rng.randint(2, 12), b=rng.randint(2, 12)),
    lambda p: "What is " + M("(-%(a)s) \\times(-%(b)s)", p) + " ?", lambda p: p["a"] * p["b"], [
        ("neg_times_neg_negative", "Believes multiplying two negative numbers gives a negative answer",
         lambda p: -p["a"] * p["b"]),
        ("neg_times_neg_adds", "Adds two negative numbers when asked to multiply them",
         lambda p: -(p["a"] + p["b"])),
    ])

construct(
    "neg_div_pos", "Divide a negative integer by a positive integer", "Multiplying and Dividing Negative Numbers",
    lambda rng: dict(a=rng.randint(2, 12), b=rng.randint(2, 9)),
    lambda p: "What is " + m("(-%d) \\div %d" % (p["a"] * p["b"], p["b"])) + " ?", lambda p: -p["a"], [
        ("neg_div_pos_positive", "Thinks dividing a negative number by a positive number gives a positive answer",
         lambda p: p["a"]),
    ])

# Rounding ------------------------------------------------------------------------------------------------------
construct(
    "round_100", "Round integers to the nearest 100", "Rounding to the Nearest Whole (10, 100, etc)",
    lambda rng: dict(n=rng.randint(1001, 9998)), lambda p: f"Round {m(p['n'])} to the nearest {m(100)}",
    lambda p: half_up(p["n"], 100), [
        ("round100_to_ten", "Rounds to the nearest 10 instead of the nearest 100", lambda p: half_up(p["n"], 10)),
        ("round100_down", "Always rounds down, even when the next digit is 5 or more",
         lambda p: trunc(p["n"], 100)),
        ("round100_to_thousand", "Rounds to the nearest 1000 instead of the nearest 100",
         lambda p: half_up(p["n"], 1000)),
    ], slip=lambda p, rng: half_up(p["n"], 100) + rng.choice([100, -100, 200]))

construct(
    "round_2dp", "Round numbers to two decimal places", "Rounding to Decimal Places",
    lambda rng: dict(x=F(rng.randint(10001, 99999), 10000)),
    lambda p: f"Round {m(dec(p['x']))} to {m(2)} decimal places.", lambda p: half_up(p["x"], F(1, 100)), [
        ("round2dp_truncates", "Truncates the number instead of rounding it", lambda p: trunc(p["x"], F(1, 100))),
        ("round2dp_to_1dp", "Rounds to one decimal place instead of two", lambda p: half_up(p["x"], F(1, 10))),
    ], slip=lambda p, rng: half_up(p["x"], F(1, 100)) + rng.choice([F(1, 100), F(-1, 100), F(1, 10)]),
    fmt=lambda raw, p: m(dp2(raw)))

construct(
    "round_2sf_small", "Round numbers between 0 and 1 to two significant figures", "Rounding to Significant Figures",
    lambda rng: dict(x=F(rng.randint(1001, 9999), 100000)),
    lambda p: f"Round {m(dec(p['x']))} to {m(2)} significant figures.",
    lambda p: half_up(p["x"], sig_unit(p["x"], 2)), [
        ("round2sf_as_dp", "Rounds to two decimal places instead of two significant figures",
         lambda p: half_up(p["x"], F(1, 100))),
        ("round2sf_to_1sf", "Rounds to one significant figure instead of two",
         lambda p: half_up(p["x"], sig_unit(p["x"], 1))),
    ], slip=lambda p, rng: half_up(p["x"], sig_unit(p["x"], 2)) + rng.choice([1, -1, 10]) * sig_unit(p["x"], 2))

construct(
    "round_1sf_int", "Round integers to one significant figure", "Rounding to Significant Figures",
    lambda rng: dict(n=rng.randint(1100, 98999)), lambda p: f"Round {m(p['n'])} to {m(1)} significant figure.",
    lambda p: half_up(p["n"], sig_unit(p["n"], 1)), [
        ("round1sf_first_digit", "Gives just the first significant digit, without the zeros that keep its place "
         "value", lambda p: half_up(p["n"], sig_unit(p["n"], 1)) / sig_unit(p["n"], 1)),
        ("round1sf_to_2sf", "Rounds to two significant figures instead of one",
         lambda p: half_up(p["n"], sig_unit(p["n"], 2))),
    ], slip=lambda p, rng: half_up(p["n"], sig_unit(p["n"], 1)) + rng.choice([1, -1]) * sig_unit(p["n"], 1))

# Area, perimeter, volume -----------------------------------------------------------------------------------------
def _rect(rng):
    while True:
        l, w = rng.randint(3, 15), rng.randint(2, 12)
        if l != w:
            return dict(l=l, w=w, img=rng.random() < 0.5)


def _rect_q(what):
    def q(p):
        img = f" ![A rectangle with length {p['l']} cm and width {p['w']} cm]()" if p["img"] else ""
        return (f"A rectangle is {m(str(p['l']) + CM)} long and {m(str(p['w']) + CM)} wide.{img}\n"
                f"What is its {what}?")
    return q


construct(
    "rect_area", "Calculate the area of a rectangle where the dimensions are given in the same units",
    "Area of Simple Shapes", _rect, _rect_q("area"), lambda p: p["l"] * p["w"], [
        ("area_rect_gives_perimeter", "Calculates the perimeter when asked for the area",
         lambda p: 2 * (p["l"] + p["w"])),
        ("area_rect_adds_sides", "Adds the length and the width to find the area of a rectangle",
         lambda p: p["l"] + p["w"]),
    ], fmt=num_fmt(CM2))

construct(
    "rect_perimeter", "Calculate the perimeter of a rectangle where the dimensions are given in the same units",
    "Perimeter", _rect, _rect_q("perimeter"), lambda p: 2 * (p["l"] + p["w"]), [
        ("perim_rect_gives_area", "Calculates the area when asked for the perimeter", lambda p: p["l"] * p["w"]),
        ("perim_rect_two_sides", "Only adds two of the sides when finding the perimeter of a rectangle",
         lambda p: p["l"] + p["w"]),
    ], fmt=num_fmt(CM))

construct(
    "tri_area", "Calculate the area of a triangle where the dimensions are given in the same units",
    "Area of Simple Shapes", lambda rng: dict(b=2 * rng.randint(2, 9), h=rng.randint(3, 12)),
    lambda p: f"![A triangle with base {p['b']} cm and perpendicular height {p['h']} cm]()\n"
              "What is the area of this triangle?", lambda p: p["b"] * p["h"] // 2, [
        ("area_tri_no_half", "Does not divide by 2 when finding the area of a triangle", lambda p: p["b"] * p["h"]),
        ("area_tri_adds", "Adds the base and the height to find the area of a triangle", lambda p: p["b"] + p["h"]),
    ], fmt=num_fmt(CM2))

construct(
    "circle_area", "Calculate the area of a circle in terms of pi when given the radius", "Area of Circles",
    lambda rng: dict(r=rng.randint(2, 12)),
    lambda p: "A circle has a radius of " + m(str(p["r"]) + CM) + ".\nWhat is its area, in terms of " + m("\\pi") + " ?",
    lambda p: p["r"] ** 2, [
        ("area_circle_circumference", "Uses the formula for the circumference when asked for the area of a circle",
         lambda p: 2 * p["r"]),
        ("area_circle_diameter", "Squares the diameter instead of the radius when finding the area of a circle",
         lambda p: (2 * p["r"]) ** 2),
    ], fmt=num_fmt(" \\pi" + CM2))

construct(
    "cuboid_volume", "Calculate the volume of a cuboid", "Volume of Prisms",
    lambda rng: dict(l=rng.randint(2, 9), w=rng.randint(2, 9), h=rng.randint(2, 9)),
    lambda p: f"![A cuboid with length {p['l']} cm, width {p['w']} cm and height {p['h']} cm]()\n"
              "What is the volume of the cuboid?", lambda p: p["l"] * p["w"] * p["h"], [
        ("vol_adds_dimensions", "Adds the dimensions instead of multiplying them to find the volume",
         lambda p: p["l"] + p["w"] + p["h"]),
        ("vol_gives_surface_area", "Calculates the surface area instead of the volume",
         lambda p: 2 * (p["l"] * p["w"] + p["l"] * p["h"] + p["w"] * p["h"])),
    ], fmt=num_fmt(CM3))

# Angles -------------------------------------------------------------------------------------------------------------
construct(
    "angle_line", "Find missing angles on a straight line", "Basic Angle Facts (straight line, opposite, around a point, etc)",
    lambda rng: dict(x=rng.choice([v for v in range(20, 161, 5) if v != 90])),
    lambda p: f"![Two angles on a straight line. One is {p['x']} degrees and the other is marked x.]()\n"
              f"One angle on a straight line is {m(str(p['x']) + DEG)}. What is the size of angle {m('x')} ?",
    lambda p: 180 - p["x"], [
        ("angle_line_360", "Believes angles on a straight line add up to 360 degrees", lambda p: 360 - p["x"]),
        ("angle_line_90", "Believes angles on a straight line add up to 90 degrees",
         lambda p: 90 - p["x"] if p["x"] < 90 else None),
    ], fmt=num_fmt(DEG))


def _tri_angles(rng):
    a = rng.randint(25, 100)
    return dict(a=a, b=rng.randint(20, 150 - a))


construct(
    "angle_triangle", "Find missing angles in a triangle", "Angles in Triangles", _tri_angles,
    lambda p: f"Two angles in a triangle are {m(str(p['a']) + DEG)} and {m(str(p['b']) + DEG)}.\n"
              "What is the size of the third angle?", lambda p: 180 - p["a"] - p["b"], [
        ("angle_tri_360", "Believes the angles in a triangle add up to 360 degrees",
         lambda p: 360 - p["a"] - p["b"]),
        ("angle_tri_gives_sum", "Gives the sum of the two known angles instead of the missing angle",
         lambda p: p["a"] + p["b"]),
    ], fmt=num_fmt(DEG))

construct(
    "angle_point", "Find missing angles around a point", "Basic Angle Facts (straight line, opposite, around a point, etc)",
    lambda rng: dict(a=rng.randint(30, 100), b=rng.randint(30, 100)),
    lambda p: f"Three angles meet at a point. Two of them are {m(str(p['a']) + DEG)} and "
              f"{m(str(p['b']) + DEG)}.\nWhat is the third angle?", lambda p: 360 - p["a"] - p["b"], [
        ("angle_point_180", "Believes angles around a point add up to 180 degrees",
         lambda p: 180 - p["a"] - p["b"] if p["a"] + p["b"] < 180 else None),
        ("angle_point_sum", "Adds the known angles around a point instead of subtracting them from 360 degrees",
         lambda p: p["a"] + p["b"]),
    ], fmt=num_fmt(DEG))

POLYGONS = {5: "pentagon", 6: "hexagon", 7: "heptagon", 8: "octagon", 9: "nonagon", 10: "decagon"}
construct(
    "polygon_sum", "Calculate the sum of the interior angles of a polygon", "Angles in Polygons",
    lambda rng: dict(n=rng.randint(5, 10)),
    lambda p: f"What is the sum of the interior angles of a {POLYGONS[p['n']]}?", lambda p: (p["n"] - 2) * 180, [
        ("poly_n_times_180", "Multiplies the number of sides by 180 without subtracting 2 when finding the sum of "
         "interior angles", lambda p: p["n"] * 180),
        ("poly_always_360", "Believes the interior angles of every polygon add up to 360 degrees", lambda p: 360),
        ("poly_subtracts_one", "Subtracts 1 instead of 2 from the number of sides when finding the sum of interior "
         "angles", lambda p: (p["n"] - 1) * 180),
    ], fmt=num_fmt(DEG))

# Place value and units -------------------------------------------------------------------------------------------
def _dec2(rng):
    while True:
        x = F(rng.randint(101, 9999), 100)
        if (x * 10).denominator != 1:
            return dict(x=x)


construct(
    "times_100", "Multiply a decimal by 100", "Place Value", _dec2,
    lambda p: "Calculate:\n" + display(dec(p["x"]) + " \\times 100"), lambda p: p["x"] * 100, [
        ("x100_appends_zeros", "Writes two zeros on the end of a decimal when multiplying by 100",
         lambda p: dec(p["x"]) + "00"),
        ("x100_one_place", "Moves the decimal point one place instead of two when multiplying by 100",
         lambda p: p["x"] * 10),
    ])

construct(
    "div_1000", "Divide a decimal by 1000", "Place Value", _dec2,
    lambda p: "What is the value of:\n" + display(dec(p["x"]) + " \\div 1000"), lambda p: p["x"] / 1000, [
        ("d1000_wrong_way", "Moves the decimal point to the right instead of the left when dividing by 1000",
         lambda p: p["x"] * 1000),
        ("d1000_two_places", "Moves the decimal point two places instead of three when dividing by 1000",
         lambda p: p["x"] / 100),
    ])

PLACES = ["ones", "tens", "hundreds", "thousands", "ten thousands", "hundred thousands"]


def _pv(rng):
    digits = rng.sample(range(1, 10), 6)
    return dict(n=int("".join(map(str, digits))), pos=rng.randint(1, 4))


def _pv_digit(p):
    return int(str(p["n"])[5 - p["pos"]])


construct(
    "digit_value", "Identify the value of a digit in an integer", "Place Value", _pv,
    lambda p: "What is the value of the " + m(_pv_digit(p)) + " in the number " + m(f"{p['n']:,}") + " ?",
    lambda p: _pv_digit(p) * 10 ** p["pos"], [
        ("pv_gives_digit", "Gives the digit itself instead of its value in the number", _pv_digit),
        ("pv_column_right", "Confuses a place value column with the column to its right",
         lambda p: _pv_digit(p) * 10 ** (p["pos"] - 1)),
        ("pv_column_left", "Confuses a place value column with the column to its left",
         lambda p: _pv_digit(p) * 10 ** (p["pos"] + 1)),
    ])

construct(
    "cm_to_m", "Convert between cm and m", "Length Units", lambda rng: dict(x=rng.randint(5, 950)),
    lambda p: f"Convert {m(str(p['x']) + CM)} into metres.", lambda p: F(p["x"], 100), [
        ("cm_m_divides_ten", "Divides by 10 instead of 100 when converting centimetres to metres",
         lambda p: F(p["x"], 10)),
        ("cm_m_multiplies", "Multiplies instead of divides when converting centimetres to metres",
         lambda p: p["x"] * 100),
    ], fmt=num_fmt(" \\mathrm{~m}"))

construct(
    "l_to_ml", "Convert between l and ml", "Volume and Capacity Units",
    lambda rng: dict(x=F(rng.randint(2, 95), 10)),
    lambda p: "A bottle holds " + m(dec(p["x"]) + " \\mathrm{~L}") + " of water.\nHow many millilitres is that?",
    lambda p: p["x"] * 1000, [
        ("l_ml_hundred", "Believes there are 100 millilitres in a litre", lambda p: p["x"] * 100),
        ("l_ml_divides", "Divides instead of multiplies when converting litres to millilitres",
         lambda p: p["x"] / 1000),
    ], fmt=num_fmt(" \\mathrm{~ml}"))

construct(
    "hours_to_minutes", "Convert from hours to minutes", "Time",
    lambda rng: dict(h=rng.randint(1, 5) + F(rng.choice([1, 2, 3]), 4)),
    lambda p: f"How many minutes are there in {m(dec(p['h']))} hours?", lambda p: p["h"] * 60, [
        ("hours_hundred_minutes", "Believes there are 100 minutes in an hour", lambda p: p["h"] * 100),
        ("hours_decimal_as_minutes", "Reads the decimal part of a number of hours as that many minutes",
         lambda p: int(p["h"]) * 60 + int(dec(p["h"]).split(".")[1])),
    ], fmt=num_fmt(" \\mathrm{~minutes}"))

construct(
    "m2_to_cm2", "Convert between m² and cm²", "Area Units", lambda rng: dict(x=rng.randint(2, 30)),
    lambda p: "A floor has an area of " + M("%(x)s \\mathrm{~m}^{2}", p) + ".\nWhat is this in "
              + m("\\mathrm{cm}^{2}") + " ?", lambda p: p["x"] * 10000, [
        ("m2_cm2_length_factor", "Uses the length conversion factor instead of the area conversion factor when "
         "converting units of area", lambda p: p["x"] * 100),
        ("m2_cm2_thousand", "Believes there are 1000 square centimetres in a square metre", lambda p: p["x"] * 1000),
    ], fmt=num_fmt(CM2))

construct(
    "time_interval", "Calculate time intervals across the hour", "Time",
    lambda rng: dict(h1=rng.randint(7, 12), m1=rng.randint(31, 55), dh=rng.randint(1, 4), m2=rng.randint(0, 29)),
    lambda p: f"A film starts at {p['h1']}:{p['m1']:02d} and ends at {p['h1'] + p['dh']}:{p['m2']:02d}\n"
              "How long is the film?",
    lambda p: divmod((p["dh"] * 60 + p["m2"] - p["m1"]), 60), [
        ("time_hundred_minutes", "Subtracts times as if there were 100 minutes in an hour",
         lambda p: divmod(p["dh"] * 100 + p["m2"] - p["m1"], 100)),
    ], fmt=lambda raw, p: f"{raw[0]} hour{'s' if raw[0] != 1 else ''} {raw[1]} minutes" if raw[1] >= 0 else None,
    slip=lambda p, rng: divmod((p["dh"] * 60 + p["m2"] - p["m1"]) + rng.choice([-10, 10, 60, -60, 5]), 60))

# Probability, ratio, proportion -------------------------------------------------------------------------------------
construct(
    "prob_bag", "Calculate the probability of an event from a bag of counters", "Probability of Single Events",
    lambda rng: dict(r=rng.randint(2, 9), b=rng.randint(2, 9), g=rng.randint(1, 9)),
    lambda p: f"A bag has {m(p['r'])} red, {m(p['b'])} blue and {m(p['g'])} green counters.\n"
              "One counter is picked at random. What is the probability it is red?",
    lambda p: (p["r"], p["r"] + p["b"] + p["g"]), [
        ("prob_favourable_over_unfavourable", "Writes the number of favourable outcomes over the number of "
         "unfavourable outcomes", lambda p: (p["r"], p["b"] + p["g"])),
        ("prob_each_colour_equal", "Believes each colour is equally likely, whatever the number of counters",
         lambda p: (1, 3)),
    ], fmt=frac_fmt)


def _share(rng):
    a = rng.randint(1, 5)
    b = rng.randint(a + 1, 9)
    return dict(a=a, b=b, k=rng.randint(2, 15))


construct(
    "ratio_share", "Share an amount in a given ratio", "Sharing in a Ratio", _share,
    lambda p: f"{NAMES[p['k'] % 10]} and {NAMES[(p['k'] + 3) % 10]} share {m('£ ' + str((p['a'] + p['b']) * p['k']))} "
              f"in the ratio {M('%(a)s: %(b)s', p)}\nHow much does {NAMES[(p['k'] + 3) % 10]} get?",
    lambda p: p["b"] * p["k"], [
        ("ratio_one_part", "Finds the value of one part but does not multiply by the number of parts",
         lambda p: p["k"]),
        ("ratio_shares_equally", "Shares the amount equally instead of in the given ratio",
         lambda p: F((p["a"] + p["b"]) * p["k"], 2)),
        ("ratio_divides_by_part", "Divides the total by a number in the ratio instead of by the total number of "
         "parts", lambda p: F((p["a"] + p["b"]) * p["k"], p["b"])),
    ], fmt=num_fmt(pre="£ "))


def _simplify_ratio(rng):
    while True:
        x, y, f = rng.randint(1, 7), rng.randint(2, 9), rng.choice([4, 6, 8, 9, 10, 12])
        if x != y and gcd(x, y) == 1:
            return dict(x=x, y=y, f=f)


def _small_prime(n):
    return next(q for q in range(2, n + 1) if n % q == 0)


construct(
    "ratio_simplify", "Simplify a ratio where the parts share a common factor", "Writing Ratios", _simplify_ratio,
    lambda p: "Write this ratio in its simplest form:\n" + display("%d: %d" % (p["x"] * p["f"], p["y"] * p["f"])),
    lambda p: f"{p['x']}: {p['y']}", [
        ("ratio_simplify_one_part", "Divides only one part of the ratio by the common factor",
         lambda p: f"{p['x']}: {p['y'] * p['f']}"),
        ("ratio_not_highest_factor", "Divides by a common factor that is not the highest, so does not fully "
         "simplify the ratio", lambda p: f"{p['x'] * p['f'] // _small_prime(p['f'])}: "
                                         f"{p['y'] * p['f'] // _small_prime(p['f'])}"),
    ], fmt=expr_fmt, slip=lambda p, rng: rng.choice([f"{p['y']}: {p['x']}", f"{p['x'] + 1}: {p['y']}",
                                                     f"{p['x']}: {p['y'] + 1}"]))

construct(
    "speed", "Calculate speed given distance and time", "Speed, Distance, Time",
    lambda rng: dict(s=rng.randint(3, 20) * 5, t=rng.randint(2, 6)),
    lambda p: "A car travels " + m(str(p["s"] * p["t"]) + " \\mathrm{~km}") + " in " + m(p["t"]) + " hours.\n"
              "What is its average speed?", lambda p: p["s"], [
        ("speed_multiplies", "Multiplies the distance by the time to find the speed", lambda p: p["s"] * p["t"] ** 2),
        ("speed_time_over_distance", "Divides the time by the distance to find the speed",
         lambda p: F(1, p["s"])),
    ], fmt=num_fmt(" \\mathrm{~km} / \\mathrm{h}"))

# Algebra ----------------------------------------------------------------------------------------------------------
construct(
    "expand_single", "Expand a single bracket with a positive number outside", "Expanding Single Brackets",
    lambda rng: dict(a=rng.randint(2, 9), b=rng.randint(1, 12), x=pick(rng, VARS)),
    lambda p: "Expand:\n" + D("%(a)s(%(x)s+%(b)s)", p),
    lambda p: lin(p["a"], p["a"] * p["b"], p["x"]), [
        ("expand_first_term_only", "Only multiplies the first term in the bracket by the number outside",
         lambda p: lin(p["a"], p["b"], p["x"])),
        ("expand_adds_to_constant", "Adds the number outside the bracket to the constant term instead of "
         "multiplying", lambda p: lin(p["a"], p["a"] + p["b"], p["x"])),
    ], fmt=expr_fmt, slip=lambda p, rng: lin(p["a"] + rng.choice([1, -1]), p["a"] * p["b"], p["x"]))


def _quad(s, lin_c, const, x="x"):
    mid = "" if lin_c == 0 else (f"+{lin_c} {x}" if lin_c > 0 else f"{lin_c} {x}")
    return f"{x}^{{2}}{mid}{'+' if const >= 0 else ''}{const}"


construct(
    "expand_double", "Expand two brackets with linear terms in the form (x + a)(x + b)", "Expanding Double Brackets",
    lambda rng: dict(a=rng.randint(1, 9), b=rng.randint(1, 9), x=pick(rng, VARS)),
    lambda p: "Expand and simplify:\n" + D("(%(x)s+%(a)s)(%(x)s+%(b)s)", p),
    lambda p: _quad(1, p["a"] + p["b"], p["a"] * p["b"], p["x"]), [
        ("expand_double_firsts_lasts", "Only multiplies the first terms and the last terms when expanding double "
         "brackets", lambda p: _quad(1, 0, p["a"] * p["b"], p["x"])),
        ("expand_double_adds_constants", "Adds the constants instead of multiplying them when expanding double "
         "brackets", lambda p: _quad(1, p["a"] + p["b"], p["a"] + p["b"], p["x"])),
    ], fmt=expr_fmt, slip=lambda p, rng: _quad(1, p["a"] * p["b"], p["a"] + p["b"], p["x"])
    if rng.random() < 0.5 else _quad(1, p["a"] + p["b"] + 1, p["a"] * p["b"], p["x"]))


def _collect(rng):
    return dict(a=rng.randint(2, 9), b=rng.randint(2, 9), c=rng.randint(2, 9), d=rng.randint(2, 9))


construct(
    "collect_terms", "Simplify algebraic expressions by collecting like terms with two variables",
    "Simplifying Expressions by Collecting Like Terms", _collect,
    lambda p: "Simplify:\n" + D("%(a)s x+%(b)s y+%(c)s x+%(d)s y", p),
    lambda p: f"{p['a'] + p['c']} x+{p['b'] + p['d']} y", [
        ("collect_all_terms", "Adds all the coefficients together, combining terms with different letters",
         lambda p: f"{p['a'] + p['b'] + p['c'] + p['d']} x y"),
        ("collect_multiplies", "Multiplies the coefficients instead of adding them when collecting like terms",
         lambda p: f"{p['a'] * p['c']} x+{p['b'] * p['d']} y"),
    ], fmt=expr_fmt, slip=lambda p, rng: rng.choice([f"{p['a'] + p['c']} x+{p['b'] + p['d'] + 1} y",
                                                     f"{p['a'] + p['c'] - 1} x+{p['b'] + p['d']} y"]))


def _eq(rng):
    a, x = rng.randint(2, 9), rng.randint(1, 12)
    b = rng.randint(1, 20)
    return dict(a=a, b=b, c=a * x + b, x=pick(rng, VARS))


construct(
    "solve_two_step", "Solve two-step linear equations with the variable on one side", "Linear Equations", _eq,
    lambda p: "Solve:\n" + D("%(a)s %(x)s+%(b)s=%(c)s", p),
    lambda p: F(p["c"] - p["b"], p["a"]), [
        ("eq_wrong_inverse", "Adds the constant instead of subtracting it when solving an equation (uses the "
         "wrong inverse operation)", lambda p: F(p["c"] + p["b"], p["a"])),
        ("eq_subtracts_coefficient", "Subtracts the coefficient instead of dividing by it when solving an "
         "equation", lambda p: p["c"] - p["b"] - p["a"]),
        ("eq_divides_one_side_first", "Divides only the right-hand side by the coefficient before subtracting "
         "the constant", lambda p: F(p["c"], p["a"]) - p["b"]),
    ], fmt=lambda raw, p: None if dec(raw) is None else m(f"{p['x']}={dec(raw)}"))

construct(
    "substitute_power", "Substitute positive integer values into expressions involving powers",
    "Substitution into Formula", lambda rng: dict(a=rng.randint(2, 6), n=rng.randint(2, 7), x=pick(rng, VARS)),
    lambda p: "What is the value of " + M("%(a)s %(x)s^{2}", p) + " when " + M("%(x)s=%(n)s", p) + " ?",
    lambda p: p["a"] * p["n"] ** 2, [
        ("subst_squares_coefficient", "Squares the coefficient as well as the variable when substituting into a "
         "term with a power", lambda p: (p["a"] * p["n"]) ** 2),
        ("subst_square_doubles", "Multiplies the substituted value by 2 instead of squaring it",
         lambda p: p["a"] * 2 * p["n"]),
    ])

construct(
    "nth_term", "Find the nth term rule for an ascending linear sequence", "Linear Sequences (nth term)",
    lambda rng: dict(a=rng.randint(1, 15), d=rng.randint(2, 9)),
    lambda p: "What is the nth term of this sequence?\n"
              + m(", ".join(str(p["a"] + i * p["d"]) for i in range(4)) + ", \\ldots"),
    lambda p: lin(p["d"], p["a"] - p["d"], "n"), [
        ("nth_first_term_constant", "Uses the first term as the constant in the nth term rule",
         lambda p: lin(p["d"], p["a"], "n")),
        ("nth_n_plus_difference", "Writes the nth term rule as n plus the common difference",
         lambda p: lin(1, p["d"], "n")),
    ], fmt=expr_fmt, slip=lambda p, rng: lin(p["d"] + rng.choice([1, -1]), p["a"] - p["d"], "n"))

construct(
    "gradient_ymxc", "Identify the gradient from an equation in the form y = mx + c",
    "Finding the Gradient and Intercept of a Line from the Equation",
    lambda rng: dict(g=rng.choice([-5, -4, -3, -2, 2, 3, 4, 5, 6]), c=rng.randint(-9, 9)),
    lambda p: f"What is the gradient of the line {m('y=' + lin(p['g'], p['c']))} ?", lambda p: p["g"], [
        ("grad_gives_intercept", "Gives the y-intercept when asked for the gradient of a line",
         lambda p: p["c"]),
        ("grad_ignores_sign", "Ignores the sign of the coefficient of x when finding the gradient",
         lambda p: abs(p["g"]) if p["g"] < 0 else None),
    ])

construct(
    "gradient_axbyc", "Find the gradient of a line written in the form ax + by = c",
    "Finding the Gradient and Intercept of a Line from the Equation",
    lambda rng: dict(b=rng.randint(2, 5), k=rng.randint(2, 6), c=rng.randint(2, 30)),
    lambda p: "What is the gradient of the line " + m("%d x+%d y=%d" % (p["b"] * p["k"], p["b"], p["c"])) + " ?",
    lambda p: -p["k"], [
        ("grad_no_rearrange", "Takes the coefficient of x as the gradient without rearranging to make y the subject",
         lambda p: p["b"] * p["k"]),
        ("grad_sign_rearranging", "Does not change the sign of a term when moving it to the other side of an "
         "equation", lambda p: p["k"]),
    ])

construct(
    "coordinates", "Read the coordinates of a point in the first quadrant", "Coordinates",
    lambda rng: dict(x=rng.randint(1, 9), y=rng.randint(1, 9)),
    lambda p: f"![A coordinate grid with point P plotted. P is {p['x']} squares right of the origin and {p['y']} "
              "squares up.]()\nWhat are the coordinates of point P?", lambda p: f"({p['x']}, {p['y']})", [
        ("coords_swapped", "Writes the coordinates the wrong way round, giving the y-value first",
         lambda p: f"({p['y']}, {p['x']})"),
    ], fmt=expr_fmt, slip=lambda p, rng: f"({p['x'] + rng.choice([1, -1])}, {p['y']})")

# Indices and standard form ----------------------------------------------------------------------------------------
construct(
    "index_multiply", "Multiply numbers with the same base using the laws of indices", "Laws of Indices",
    lambda rng: dict(b=rng.randint(2, 7), p=rng.randint(2, 9), q=rng.randint(2, 9)),
    lambda p: "Write as a single power:\n" + D("%(b)s^{%(p)s} \\times %(b)s^{%(q)s}", p),
    lambda p: f"{p['b']}^{{{p['p'] + p['q']}}}", [
        ("idx_mult_multiplies_powers", "Multiplies the powers instead of adding them when multiplying terms with "
         "the same base", lambda p: f"{p['b']}^{{{p['p'] * p['q']}}}"),
        ("idx_mult_multiplies_bases", "Multiplies the base numbers as well as adding the powers",
         lambda p: f"{p['b'] ** 2}^{{{p['p'] + p['q']}}}"),
    ], fmt=expr_fmt, slip=lambda p, rng: f"{p['b']}^{{{p['p'] + p['q'] + rng.choice([1, -1])}}}")


def _idx_div(rng):
    q = rng.randint(2, 4)
    return dict(p=q * rng.randint(2, 4), q=q, x=pick(rng, VARS))


construct(
    "index_divide", "Divide algebraic terms with the same base using the laws of indices", "Laws of Indices", _idx_div,
    lambda p: "Simplify:\n" + D("%(x)s^{%(p)s} \\div %(x)s^{%(q)s}", p),
    lambda p: f"{p['x']}^{{{p['p'] - p['q']}}}", [
        ("idx_div_divides_powers", "Divides the powers instead of subtracting them when dividing terms with the "
         "same base", lambda p: f"{p['x']}^{{{p['p'] // p['q']}}}"),
        ("idx_div_adds_powers", "Adds the powers when dividing terms with the same base",
         lambda p: f"{p['x']}^{{{p['p'] + p['q']}}}"),
    ], fmt=expr_fmt, slip=lambda p, rng: f"{p['x']}^{{{p['p'] - p['q'] + 1}}}")

construct(
    "index_power_power", "Raise a power to another power using the laws of indices", "Laws of Indices",
    lambda rng: dict(p=rng.randint(2, 6), q=rng.randint(3, 6), x=pick(rng, VARS)),
    lambda p: "Simplify " + M("(%(x)s^{%(p)s})^{%(q)s}", p),
    lambda p: f"{p['x']}^{{{p['p'] * p['q']}}}", [
        ("idx_pow_adds_powers", "Adds the powers when raising a power to another power",
         lambda p: f"{p['x']}^{{{p['p'] + p['q']}}}"),
    ], fmt=expr_fmt, slip=lambda p, rng: rng.choice([f"{p['x']}^{{{p['p'] * p['q'] + 1}}}",
                                                     f"{p['q']} {p['x']}^{{{p['p']}}}"]))

construct(
    "index_zero", "Evaluate a number raised to the power of zero", "Laws of Indices",
    lambda rng: dict(b=rng.randint(2, 20)), lambda p: "What is the value of " + M("%(b)s^{0}", p) + " ?",
    lambda p: 1, [
        ("idx_zero_is_zero", "Believes any number raised to the power of zero is zero", lambda p: 0),
        ("idx_zero_is_number", "Believes a number raised to the power of zero is the number itself",
         lambda p: p["b"]),
    ], slip=lambda p, rng: rng.choice([10 * p["b"], -1, 2 * p["b"]]))

construct(
    "index_negative", "Evaluate a number raised to a negative integer power", "Negative Indices",
    lambda rng: dict(b=rng.randint(2, 5), k=rng.randint(2, 3)),
    lambda p: "What is the value of " + M("%(b)s^{-%(k)s}", p) + " ?", lambda p: F(1, p["b"] ** p["k"]), [
        ("idx_neg_gives_negative", "Believes a negative power gives a negative answer", lambda p: -p["b"] ** p["k"]),
        ("idx_neg_multiplies", "Multiplies the base by the negative power", lambda p: -p["b"] * p["k"]),
    ], fmt=frac_fmt, slip=lambda p, rng: (1, p["b"] * p["k"]))


def _std_big(rng):
    s = F(rng.randint(11, 99), 10) if rng.random() < 0.7 else F(rng.randint(101, 999), 100)
    return dict(s=s, k=rng.randint(3, 7))


construct(
    "std_form_big", "Write a large number in standard form", "Standard Form", _std_big,
    lambda p: f"Write {m(dec(p['s'] * 10 ** p['k']))} in standard form.", lambda p: (p["s"], p["k"]), [
        ("std_power_counts_digits", "Uses the number of digits as the power when writing a number in standard form",
         lambda p: (p["s"], p["k"] + 1)),
        ("std_power_counts_zeros", "Uses the number of zeros as the power when writing a number in standard form",
         lambda p: (p["s"], len(dec(p["s"] * 10 ** p["k"])) - len(dec(p["s"] * 10 ** p["k"]).rstrip("0")))),
    ], fmt=std_fmt, slip=lambda p, rng: (p["s"] * 10, p["k"] - 1))

construct(
    "std_form_small", "Write a number less than 1 in standard form", "Standard Form", _std_big,
    lambda p: f"Write {m(dec(p['s'] / 10 ** p['k']))} in standard form.", lambda p: (p["s"], -p["k"]), [
        ("std_small_positive_power", "Uses a positive power of 10 for a number less than 1 in standard form",
         lambda p: (p["s"], p["k"])),
        ("std_small_counts_zeros", "Counts the zeros after the decimal point to find the negative power in "
         "standard form", lambda p: (p["s"], -(p["k"] - 1))),
    ], fmt=std_fmt, slip=lambda p, rng: (p["s"] * 10, -p["k"]))

construct(
    "std_form_ordinary", "Convert numbers in standard form to ordinary numbers", "Standard Form", _std_big,
    lambda p: "Write " + m("%s \\times 10^{%d}" % (dec(p["s"]), p["k"])) + " as an ordinary number.",
    lambda p: p["s"] * 10 ** p["k"], [
        ("std_ord_appends_zeros", "Writes the digits followed by as many zeros as the power, ignoring the decimal "
         "point", lambda p: int(dec(p["s"]).replace(".", "") + "0" * p["k"])),
    ])

# Decimals, factors ----------------------------------------------------------------------------------------------------
construct(
    "decimal_multiply", "Multiply two decimals less than 1 with one decimal place",
    "Multiplying and Dividing with Decimals", lambda rng: dict(a=rng.randint(2, 9), b=rng.randint(2, 9)),
    lambda p: "Calculate:\n" + D("0.%(a)s \\times 0.%(b)s", p), lambda p: F(p["a"] * p["b"], 100), [
        ("decmul_one_dp", "Gives the answer to one decimal place when multiplying two numbers with one decimal "
         "place each", lambda p: F(p["a"] * p["b"], 10)),
        ("decmul_adds", "Adds the decimals instead of multiplying them", lambda p: F(p["a"] + p["b"], 10)),
    ])


def _dec_add(rng):
    return dict(x=F(rng.randint(11, 99), 10), y=F(rng.randint(101, 999), 100))


def _right_align(p):
    return F(int(dec(p["x"]).replace(".", "")) + int(dec(p["y"]).replace(".", "")), 100)


def _parts_separately(p):
    wx, fx = dec(p["x"]).split(".")
    wy, fy = dec(p["y"]).split(".")
    fs = int(fx) + int(fy)
    return f"{int(wx) + int(wy)}.{fs}" if fs < 100 else None


construct(
    "decimal_add", "Add decimals where the numbers involved have a different number of decimal places",
    "Adding and Subtracting with Decimals", _dec_add,
    lambda p: "What is " + m(dec(p["x"]) + "+" + dec(p["y"])) + " ?", lambda p: p["x"] + p["y"], [
        ("decadd_right_align", "Lines up the digits from the right instead of lining up the decimal points",
         _right_align),
        ("decadd_parts_separately", "Adds the whole number parts and the decimal parts separately as if they "
         "were whole numbers", _parts_separately),
    ])


def _two_numbers(rng):
    while True:
        f = rng.choice([2, 3, 4, 5, 6, 8, 9, 10, 12])
        a, b = f * rng.randint(1, 6), f * rng.randint(1, 6)
        if a != b and min(a, b) > 3:
            return dict(a=a, b=b)


def _lcm(a, b):
    return a * b // gcd(a, b)


construct(
    "hcf", "Find the highest common factor of two numbers", "Factors and Highest Common Factor", _two_numbers,
    lambda p: f"What is the highest common factor of {m(p['a'])} and {m(p['b'])} ?",
    lambda p: gcd(p["a"], p["b"]), [
        ("hcf_gives_lcm", "Finds the lowest common multiple instead of the highest common factor",
         lambda p: _lcm(p["a"], p["b"])),
        ("hcf_not_highest", "Gives a common factor that is not the highest common factor",
         lambda p: _small_prime(gcd(p["a"], p["b"])) if gcd(p["a"], p["b"]) > 1 else None),
    ])

construct(
    "lcm", "Find the lowest common multiple of two numbers", "Multiples and Lowest Common Multiple", _two_numbers,
    lambda p: f"What is the lowest common multiple of {m(p['a'])} and {m(p['b'])} ?",
    lambda p: _lcm(p["a"], p["b"]), [
        ("lcm_multiplies", "Multiplies the two numbers together, believing this always gives the lowest common "
         "multiple", lambda p: p["a"] * p["b"]),
        ("lcm_gives_hcf", "Finds the highest common factor instead of the lowest common multiple",
         lambda p: gcd(p["a"], p["b"])),
    ])

TRIPLES = [(3, 4, 5), (6, 8, 10), (5, 12, 13), (8, 15, 17), (9, 12, 15), (7, 24, 25), (12, 16, 20), (20, 21, 29)]
construct(
    "pythagoras", "Calculate the length of the hypotenuse using Pythagoras' theorem", "Pythagoras Theorem",
    lambda rng: dict(t=rng.randrange(len(TRIPLES))),
    lambda p: f"![A right-angled triangle with shorter sides {TRIPLES[p['t']][0]} cm and {TRIPLES[p['t']][1]} cm. "
              "The hypotenuse is labelled h.]()\nWhat is the length of the hypotenuse, h?",
    lambda p: TRIPLES[p["t"]][2], [
        ("pyth_adds_sides", "Adds the lengths of the two shorter sides instead of using Pythagoras' theorem",
         lambda p: TRIPLES[p["t"]][0] + TRIPLES[p["t"]][1]),
        ("pyth_no_square_root", "Forgets to square root after adding the squares of the sides",
         lambda p: TRIPLES[p["t"]][0] ** 2 + TRIPLES[p["t"]][1] ** 2),
    ], fmt=num_fmt(CM))

for _c in CONSTRUCTS:  # wrap every type so bad arithmetic means "does not apply"
    object.__setattr__(_c, "types", tuple(MisconceptionType(t.key, t.name, safe(t.wrong)) for t in _c.types))
