"""Demo dataset: our own maths multiple-choice questions in the exact Eedi CSV format.

Every misconception *type* (helpers/demo/templates.py) is a function of a question's random numbers
that computes the wrong answer a pupil holding that misconception would give. A question shows the
correct answer and three distinct distractors: at least one comes from a misconception type of its
construct (labelled with that misconception's id), the others from other types of the construct or
from a generic slip (no id). The corpus also holds several hundred plausible misconception names that
no question uses, as the real one does (983 of 2,587), with ids shuffled so used and unused interleave.

    python -m helpers.demo.generate --output_dir data/demo --seed 42

Output is byte-identical for a seed: one ``random.Random``, no set ordering, no hash seeds.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import logging
import random
import time
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Optional

from helpers.demo.templates import CONSTRUCTS, Construct, MisconceptionType
from helpers.common.io_utils import atomic_path

logger = logging.getLogger(__name__)

TRAIN_COLUMNS = ["QuestionId", "ConstructId", "ConstructName", "SubjectId", "SubjectName", "CorrectAnswer",
                 "QuestionText", "AnswerAText", "AnswerBText", "AnswerCText", "AnswerDText",
                 "MisconceptionAId", "MisconceptionBId", "MisconceptionCId", "MisconceptionDId"]
TEST_COLUMNS = TRAIN_COLUMNS[:11]
LETTERS = "ABCD"
MISCONCEPTION_TYPES: dict[str, MisconceptionType] = {t.key: t for c in CONSTRUCTS for t in c.types}
TYPE_CONSTRUCT: dict[str, Construct] = {t.key: c for c in CONSTRUCTS for t in c.types}
assert len(MISCONCEPTION_TYPES) == sum(len(c.types) for c in CONSTRUCTS), "duplicate misconception type key"
assert len({t.name for t in MISCONCEPTION_TYPES.values()}) == len(MISCONCEPTION_TYPES), "duplicate type name"


def misconception_answer(key: str, params: dict) -> Optional[str]:
    """The answer text misconception type ``key`` gives for a question with ``params`` (None: n/a)."""
    c, t = TYPE_CONSTRUCT[key], MISCONCEPTION_TYPES[key]
    return c.answer_text(t.wrong(params), params)


def correct_answer(construct: Construct, params: dict) -> Optional[str]:
    return construct.answer_text(construct.correct(params), params)


def _norm(text: str) -> str:
    return " ".join(text.split())


@dataclass
class DemoQuestion:
    question_id: int
    construct: Construct
    params: dict
    text: str
    answers: list            # answer texts, A..D
    correct: str             # letter of the correct answer
    type_keys: list          # per letter: misconception type key, or None (correct answer, slip)


@dataclass
class DemoData:
    train: list
    test: list
    names: dict              # misconception id -> name
    type_ids: dict           # type key -> misconception id
    construct_ids: dict      # construct key -> ConstructId
    subject_ids: dict        # subject name -> SubjectId
    seed: int = 42

    @property
    def pairs(self) -> int:
        return sum(k is not None for q in self.train for k in q.type_keys)

    @property
    def unused_ids(self) -> list:
        used = {self.type_ids[k] for q in self.train for k in q.type_keys if k is not None}
        return [i for i in sorted(self.names) if i not in used]


def make_question(construct: Construct, rng: random.Random, usage: dict, question_id: int,
                  max_tries: int = 100) -> DemoQuestion:
    """Sample numbers until the correct answer and three distinct distractors exist.

    The labelled distractors are the construct's least used types (ties broken at random), 1-3 of them,
    and numbers where the least used type applies are preferred;
    the rest are slips whose text differs from the correct answer and from every type's answer.
    """
    ties = [rng.random() for _ in construct.types]
    ranked = [t.key for t, _ in sorted(zip(construct.types, ties), key=lambda x: (usage.get(x[0].key, 0), x[1]))]
    for attempt in range(max_tries):
        p = construct.sample(rng)
        correct = correct_answer(construct, p)
        if correct is None:
            continue
        seen = {_norm(correct)}
        cands = []
        for key in ranked:
            text = misconception_answer(key, p)
            if text is not None and _norm(text) not in seen:
                seen.add(_norm(text))
                cands.append((key, text))
        if not cands or (attempt < max_tries // 2 and cands[0][0] != ranked[0]):
            continue  # prefer numbers where the least used type applies, so every type gets used
        r = rng.random()
        k = min(len(cands), 1 if r < 0.25 else 2 if r < 0.65 else 3)
        distractors = cands[:k]
        for _try in range(40):
            if len(distractors) == 3:
                break
            text = construct.answer_text(construct.slip_raw(p, rng), p)
            if text is not None and _norm(text) not in seen:
                seen.add(_norm(text))
                distractors.append((None, text))
        distractors += cands[k:k + 3 - len(distractors)]
        if len(distractors) < 3:
            continue
        options = [(None, correct, True)] + [(key, text, False) for key, text in distractors]
        rng.shuffle(options)
        qtext = construct.question(p)
        if rng.random() < 0.04:  # the real texts carry stray trailing white space
            qtext += " "
        return DemoQuestion(question_id, construct, p, qtext, [o[1] for o in options],
                            LETTERS[[o[2] for o in options].index(True)], [o[0] for o in options])
    raise RuntimeError(f"construct {construct.key!r}: no valid question in {max_tries} tries")


def generate(seed: int = 42, num_pairs: int = 500, num_unused: int = 340, num_test: int = 5) -> DemoData:
    """Build the whole demo dataset in memory (see :func:`write_demo` for the files)."""
    rng = random.Random(seed)
    construct_ids = dict(zip([c.key for c in CONSTRUCTS], rng.sample(range(100, 4000), len(CONSTRUCTS))))
    subjects = list(dict.fromkeys(c.subject for c in CONSTRUCTS))
    subject_ids = dict(zip(subjects, rng.sample(range(30, 1100), len(subjects))))

    usage = {k: 0 for k in MISCONCEPTION_TYPES}
    train, pairs = [], 0
    while pairs < num_pairs:
        order = list(CONSTRUCTS)
        rng.shuffle(order)
        for c in order:
            if pairs >= num_pairs:
                break
            q = make_question(c, rng, usage, len(train))
            for key in q.type_keys:
                if key is not None:
                    usage[key] += 1
                    pairs += 1
            train.append(q)
    test = [make_question(c, rng, {}, len(train) + i)
            for i, c in enumerate(rng.sample(CONSTRUCTS, min(num_test, len(CONSTRUCTS))))]

    type_names = [t.name for t in MISCONCEPTION_TYPES.values()]
    pool = [n for n in unused_name_pool() if n not in set(type_names)]
    if num_unused > len(pool):
        raise ValueError(f"--num_unused {num_unused}: only {len(pool)} distinct unused names can be generated")
    names = type_names + rng.sample(pool, num_unused)
    ids = list(range(len(names)))
    rng.shuffle(ids)
    by_id = dict(sorted(zip(ids, names)))
    type_ids = dict(zip(MISCONCEPTION_TYPES, ids))
    return DemoData(train, test, by_id, type_ids, construct_ids, subject_ids, seed)


# ------------------------------------------------------------------------------------ unused names
CONFUSABLE = [
    ["area", "perimeter", "volume", "surface area"], ["mean", "median", "mode", "range"],
    ["factors", "multiples", "prime numbers", "square numbers", "cube numbers"],
    ["radius", "diameter", "circumference", "chord", "tangent", "arc", "sector", "segment"],
    ["acute angles", "obtuse angles", "reflex angles", "right angles"], ["parallel lines", "perpendicular lines"],
    ["the x-axis", "the y-axis"], ["the gradient", "the y-intercept"], ["sine", "cosine", "tan"],
    ["isosceles triangles", "equilateral triangles", "scalene triangles", "right-angled triangles"],
    ["squares", "rhombuses", "parallelograms", "trapeziums", "kites", "rectangles"],
    ["prisms", "pyramids", "cylinders", "cones", "spheres"], ["tenths", "hundredths", "thousandths"],
    ["expressions", "equations", "formulae", "identities"], ["terms", "coefficients", "constants"],
    ["vertices", "edges", "faces"], ["rotations", "reflections", "translations", "enlargements"],
    ["interior angles", "exterior angles"], ["bar charts", "histograms", "pie charts", "line graphs"],
    ["frequency", "relative frequency", "cumulative frequency"],
    ["alternate angles", "corresponding angles", "co-interior angles", "vertically opposite angles"],
    ["the numerator", "the denominator"], ["simple interest", "compound interest"],
    ["direct proportion", "inverse proportion"], ["the nth term", "the term-to-term rule"],
    ["independent events", "mutually exclusive events"], ["the lower quartile", "the upper quartile"],
    ["speed", "distance", "time"], ["mass", "weight", "density"], ["the input", "the output"],
]
UNIT_FACTS = [("millimetres", "centimetre", [100, 1000]), ("centimetres", "metre", [10, 1000]),
              ("metres", "kilometre", [100, 10000]), ("grams", "kilogram", [100, 10]),
              ("seconds", "minute", [100, 10]), ("hours", "day", [12, 60, 100]), ("days", "week", [5, 10]),
              ("months", "year", [10, 100]), ("minutes", "hour", [100, 30]), ("millilitres", "litre", [10, 100]),
              ("kilograms", "tonne", [100, 10000]), ("weeks", "year", [48, 50])]
ANGLE_SUMS = [("quadrilateral", [180, 540]), ("pentagon", [360, 720]), ("hexagon", [540, 900]),
              ("octagon", [720, 1260])]
SYMMETRY = [("square", [2, 8]), ("rectangle", [4, 0]), ("rhombus", [0, 4]), ("parallelogram", [2, 4]),
            ("kite", [2, 0]), ("equilateral triangle", [1, 6]), ("isosceles triangle", [0, 2]),
            ("regular hexagon", [3, 12]), ("circle", [1, 2])]
TASKS = ["find the area of a trapezium", "calculate the circumference of a circle", "find the volume of a cylinder",
         "read a scale on a number line", "interpret a box plot", "find the interquartile range",
         "use a protractor to measure an angle", "convert a fraction to a decimal", "find the reciprocal of a fraction",
         "simplify a surd", "rationalise a denominator", "complete the square", "factorise a quadratic expression",
         "find the equation of a line through two points", "calculate a bearing", "use the sine rule",
         "use the cosine rule", "find the midpoint of a line segment", "plot a quadratic graph",
         "solve simultaneous equations by elimination", "draw a tree diagram", "find the inverse of a function",
         "find a composite function", "calculate compound interest", "work out a reverse percentage",
         "estimate the mean from a grouped frequency table", "calculate the volume of a cone",
         "write a recurring decimal as a fraction", "find the prime factor decomposition of a number",
         "use a Venn diagram to find a probability", "find the length of an arc", "find the area of a sector",
         "draw a stem and leaf diagram", "calculate a frequency density", "find the turning point of a quadratic",
         "solve a quadratic inequality", "use a conversion graph", "construct a perpendicular bisector"]
RECOGNISE = ["a square number", "a cube number", "a prime number", "an arithmetic sequence", "a geometric sequence",
             "the notation for parallel lines", "the notation for equal sides", "a right angle marked on a diagram",
             "an equation with the variable on the right-hand side", "a reflex angle", "a unit fraction",
             "an improper fraction", "a quadratic sequence", "a Fibonacci sequence", "the net of a cube",
             "a line of symmetry in a diagonal direction", "the order of rotational symmetry",
             "a recurring decimal", "an identity", "a linear graph written in the form ax + by = c",
             "a negative correlation", "an outlier in a scatter graph", "a congruent shape", "a similar shape"]


def unused_name_pool() -> list:
    """Plausible Eedi-style misconception names from combinatorial templates (unique, in a fixed order)."""
    out = []
    for group in CONFUSABLE:
        for a, b in combinations(group, 2):
            out.append(f"Confuses {a} with {b}")
            out.append(f"Thinks {a} and {b} mean the same thing")
    for small, big, wrongs in UNIT_FACTS:
        out += [f"Believes there are {w} {small} in a {big}" for w in wrongs]
    for shape, wrongs in ANGLE_SUMS:
        out += [f"Believes the interior angles of a {shape} add up to {w} degrees" for w in wrongs]
    for shape, wrongs in SYMMETRY:
        out += [f"Believes a {shape} has {w} line{'s' if w != 1 else ''} of symmetry" for w in wrongs]
    out += [f"Does not know how to {t}" for t in TASKS]
    out += [f"Does not recognise {r}" for r in RECOGNISE]
    out = [n[0].upper() + n[1:] for n in out]
    return list(dict.fromkeys(out))


# ---------------------------------------------------------------------------------------------- files
def _csv_text(header, rows, lineterminator) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator=lineterminator)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _row(q: DemoQuestion, data: DemoData) -> list:
    c = q.construct
    return [q.question_id, data.construct_ids[c.key], c.name, data.subject_ids[c.subject], c.subject, q.correct,
            q.text, *q.answers]


def render(data: DemoData) -> dict:
    """File name -> text, exactly as written (train.csv ends records with CRLF, as the real file does)."""
    train = [_row(q, data) + [f"{data.type_ids[k]}.0" if k else "" for k in q.type_keys] for q in data.train]
    test = [_row(q, data) for q in data.test]
    sub = [[f"{q.question_id}_{l}", " ".join(str(i) for i in range(1, 26))]
           for q in data.test for l in LETTERS if l != q.correct]
    mapping = [[i, n] for i, n in data.names.items()]
    return {
        "train.csv": _csv_text(TRAIN_COLUMNS, train, "\r\n"),
        "misconception_mapping.csv": _csv_text(["MisconceptionId", "MisconceptionName"], mapping, "\n"),
        "test.csv": _csv_text(TEST_COLUMNS, test, "\n"),
        "sample_submission.csv": _csv_text(["QuestionId_Answer", "MisconceptionId"], sub, "\n"),
        "README.md": readme(data),
    }


def stats(data: DemoData) -> dict:
    used_types = {k for q in data.train for k in q.type_keys if k is not None}
    return {"train_questions": len(data.train), "test_questions": len(data.test), "pairs": data.pairs,
            "misconceptions": len(data.names), "types": len(MISCONCEPTION_TYPES), "types_used": len(used_types),
            "unused_names": len(data.unused_ids), "constructs": len({q.construct.key for q in data.train}),
            "subjects": len({q.construct.subject for q in data.train})}


def readme(data: DemoData) -> str:
    s = stats(data)
    return f"""# Demo dataset (generated, not real Eedi data)

Maths multiple-choice questions in the exact CSV format of the Kaggle competition "Eedi - Mining
Misconceptions in Mathematics", produced by our own generator `helpers/demo/generate.py` (templates in
`helpers/demo/templates.py`). No competition data is included.

Regenerate (byte-identical; `tests/demo/test_generate.py` checks it):

    python -m helpers.demo.generate --output_dir data/demo --seed {data.seed}

| file | what |
| --- | --- |
| `train.csv` | {s['train_questions']} questions, 15 columns; {s['pairs']} (question, wrong answer) pairs carry a misconception id (written as a float, e.g. `12.0`; empty for the correct answer and for slips) |
| `misconception_mapping.csv` | {s['misconceptions']} misconceptions (`MisconceptionId,MisconceptionName`) |
| `test.csv` | {s['test_questions']} questions, the 11 columns without misconception ids |
| `sample_submission.csv` | `QuestionId_Answer,MisconceptionId` with 25 space-separated ids, as Kaggle's |

How it is made: {s['types']} misconception types ({s['types_used']} used in train.csv) over {s['constructs']}
constructs and {s['subjects']} subjects. Each type is a function of a question's random numbers that
computes the wrong answer the misconception gives (e.g. adding numerators and denominators, working left
to right, confusing area and perimeter). Each question has the correct answer and three distinct
distractors: 1-3 from its construct's misconception types (least used first), the rest generic slips
without an id. {s['unused_names']} further names come from combinatorial templates and no question uses
them (the real corpus has 983 such names); ids are shuffled so used and unused ones interleave. Texts
hold LaTeX (`\\( \\frac{{3}}{{4}} \\)`, `\\[ ... \\]`), newlines, markdown image placeholders and, in a few
questions, trailing white space, as the real files do.
"""


def write_demo(output_dir, seed: int = 42, num_pairs: int = 500, num_unused: int = 340,
               num_test: int = 5) -> dict:
    """Generate the demo dataset and write its five files atomically; returns :func:`stats`."""
    data = generate(seed, num_pairs, num_unused, num_test)
    out = Path(output_dir)
    for name, text in render(data).items():
        with atomic_path(out / name) as tmp:
            tmp.write_bytes(text.encode("utf-8"))
    return stats(data)


# ------------------------------------------------------------------------------------------------ CLI
@dataclass
class DemoDataArguments:
    output_dir: str = field(default="data/demo", metadata={"help": "folder for the five generated files"})
    seed: int = field(default=42, metadata={"help": "random seed; the same seed gives byte-identical files"})
    num_pairs: int = field(default=500, metadata={"help": "stop once train.csv has this many labelled pairs"})
    num_unused: int = field(default=340, metadata={"help": "misconception names that no question uses"})
    num_test: int = field(default=5, metadata={"help": "questions in test.csv"})

    def __post_init__(self):
        for name in ("num_pairs", "num_test"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.num_unused < 0:
            raise ValueError(f"--num_unused must be at least 0, got {self.num_unused}")


def parse_args(argv=None) -> DemoDataArguments:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in dataclasses.fields(DemoDataArguments):
        ap.add_argument(f"--{f.name}", type=type(f.default), default=f.default, help=f.metadata["help"])
    return DemoDataArguments(**vars(ap.parse_args(argv)))


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    logger.info("arguments: %s", dataclasses.asdict(args))
    t0 = time.time()
    s = write_demo(args.output_dir, args.seed, args.num_pairs, args.num_unused, args.num_test)
    logger.info("wrote %s in %.2fs: %s", args.output_dir, time.time() - t0, s)
    return 0


if __name__ == "__main__":
    from helpers.common.cli import run
    run(main)
