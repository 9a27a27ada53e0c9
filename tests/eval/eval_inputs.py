"""The tiny test split the eval tests share: 8 misconceptions, 3 test queries, 2 train queries."""
from helpers.common.io_utils import write_jsonl

CORPUS = ["Adds the numerators and the denominators of fractions", "Thinks a triangle's angles sum to 360",
          "Confuses area and perimeter", "Believes multiplying always makes a number bigger",
          "Does not understand place value after the decimal point", "Thinks the mean is the middle value",
          "Forgets to change the sign when moving a term", "Believes a negative times a negative is negative"]
IDS = [str(100 + i) for i in range(len(CORPUS))]


def query_row(qid, gold, text="q"):
    return {"query_id": qid, "query": text, "pos": [CORPUS[IDS.index(gold)]], "pos_ids": [gold],
            "neg": [], "neg_ids": [], "prompt": "Find the misconception."}


def eval_files(tmp_path, queries=None):
    """corpus.jsonl, test_queries.jsonl, train_queries.jsonl under ``tmp_path/data``."""
    d = tmp_path / "data"
    write_jsonl(d / "corpus.jsonl", [{"id": i, "text": t} for i, t in zip(IDS, CORPUS)])
    queries = queries or [query_row("1_A", "100", "What is 1/2 + 1/3? Wrong answer: 2/5"),
                          query_row("2_B", "102", "Area of a 2 by 3 rectangle? Wrong answer: 10"),
                          query_row("3_C", "107", "What is -2 times -3? Wrong answer: -6")]
    write_jsonl(d / "test_queries.jsonl", queries)
    write_jsonl(d / "train_queries.jsonl", [query_row("9_A", "100"), query_row("9_B", "107")])
    return d
