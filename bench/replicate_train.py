"""A train.csv of the competition's size, built from a sample by copying its questions: for
timing a profile at full size when only a sample is at hand. Its results mean nothing (copies of
one question land on both sides of the question split), its times do: every step processes as
many queries, pairs and tokens as on the full data (same texts, same lengths).

    python bench/replicate_train.py --input_dir ../shared/eedi_sample --train_file train_sample.csv \
        --questions 1869 --output_dir model_output/eedi_replica
    python run_all.py --profile eedi_cpu --var data_dir=model_output/eedi_replica --run_name eedi_cpu_full

Copy k of question q gets QuestionId q + k * (largest id + 1); the other files of input_dir
(misconception_mapping.csv, test.csv, ...) are copied as they are. Writes nothing when the input
does not parse (the same checks as 00_prepare_data).
"""
from __future__ import annotations

import argparse
import csv
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers.common.io_utils import atomic_path  # noqa: E402
from helpers.data.eedi import load_questions  # noqa: E402


def replicate(rows: list[dict], questions: int) -> list[dict]:
    """``questions`` rows: the sample's rows in order, copy after copy, with new QuestionIds."""
    if not rows:
        raise ValueError("the sample has no questions")
    step = max(int(r["QuestionId"]) for r in rows) + 1
    out = []
    for i in range(questions):
        k, r = divmod(i, len(rows))
        out.append(dict(rows[r], QuestionId=str(int(rows[r]["QuestionId"]) + k * step)))
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input_dir", required=True, help="folder with the sample's train csv and the other competition files")
    p.add_argument("--train_file", default="train.csv", help="the sample's train csv in input_dir")
    p.add_argument("--questions", type=int, default=1869, help="questions to write (the full train.csv has 1,869)")
    p.add_argument("--output_dir", required=True, help="written: train.csv and copies of the other files")
    a = p.parse_args(argv)
    src = Path(a.input_dir) / a.train_file
    load_questions(src)                                        # one clear error if the sample is malformed
    with open(src, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, list(reader)
    out_rows = replicate(rows, a.questions)
    out = Path(a.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for f in Path(a.input_dir).iterdir():
        if f.is_file() and f.suffix == ".csv" and f.name != a.train_file:
            shutil.copyfile(f, out / f.name)

    with atomic_path(out / "train.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(out_rows)
    pairs = sum(bool(r.get(f"Misconception{x}Id", "").strip()) for r in out_rows for x in "ABCD")
    print(f"{out / 'train.csv'}: {len(out_rows)} questions ({len(out_rows) / len(rows):.2f} x {len(rows)}), "
          f"{pairs} (question, wrong answer, misconception) rows")


if __name__ == "__main__":
    main()
