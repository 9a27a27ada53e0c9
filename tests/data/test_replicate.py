"""bench/replicate_train.py: a full-size train.csv from a sample, for timing a profile."""
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.common.io_utils import InputError
from helpers.data.eedi import load_questions
from tests.factories import tiny_input

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
from replicate_train import main, replicate  # noqa: E402


def test_replicate_gives_new_ids_and_the_same_rows():
    rows = [{"QuestionId": "3", "x": "a"}, {"QuestionId": "7", "x": "b"}]
    out = replicate(rows, 5)
    assert [r["QuestionId"] for r in out] == ["3", "7", "11", "15", "19"]       # + k * (7 + 1)
    assert [r["x"] for r in out] == ["a", "b", "a", "b", "a"]
    with pytest.raises(ValueError, match="no questions"):
        replicate([], 3)


def test_the_copy_reads_as_a_train_csv_with_the_other_files(tmp_path):
    src = tiny_input(tmp_path / "in", n_questions=4)
    (src / "train.csv").rename(src / "train_sample.csv")
    main(["--input_dir", str(src), "--train_file", "train_sample.csv", "--questions", "10",
          "--output_dir", str(tmp_path / "out")])
    qs = load_questions(tmp_path / "out" / "train.csv")
    assert len(qs) == 10 and len({q["QuestionId"] for q in qs}) == 10
    assert qs[4]["answers"] == qs[0]["answers"] and qs[4]["misconceptions"] == qs[0]["misconceptions"]
    assert (tmp_path / "out" / "misconception_mapping.csv").read_bytes() == \
        (src / "misconception_mapping.csv").read_bytes()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["misconception_mapping.csv", "train.csv"]


def test_a_malformed_sample_writes_nothing(tmp_path):
    src = tiny_input(tmp_path / "in", n_questions=3, mutate=lambda rows: rows[1].__setitem__(0, "x"))
    with pytest.raises(InputError, match="QuestionId"):
        main(["--input_dir", str(src), "--output_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_the_script_runs_from_the_command_line(tmp_path):
    src = tiny_input(tmp_path / "in", n_questions=2)
    r = subprocess.run([sys.executable, str(REPO / "bench" / "replicate_train.py"), "--input_dir", str(src),
                        "--questions", "3", "--output_dir", str(tmp_path / "out")],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "3 questions" in r.stdout
