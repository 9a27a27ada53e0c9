"""Default texts of DESIGN.md section 3 (what the team used)."""

QUERY_TEMPLATE = ("Question: {QuestionText}\nHint: {ConstructName}\n"
                  "Correct answer: {CorrectAnswerText}\nWrong answer: {WrongAnswerText}")

RETRIEVAL_INSTRUCTION = (
    "Given a multiple choice math question and a student's incorrect answer choice, identify and "
    "retrieve the specific mathematical misconception or error in the student's thinking that led "
    "to this wrong answer.")

RERANK_PROMPT = ("Predict whether the passage B explains the mathematical misconception that leads "
                 "to the wrong answer in query A.")

ICL_QUERY_FORMAT = "<instruct>{}\n<query>{}"
ICL_EXAMPLE_FORMAT = "<instruct>{}\n<query>{}\n<response>{}"
ICL_SUFFIX = "\n<response>"


def unescape(fmt: str) -> str:
    """A literal backslash-n in a format string given on a command line means a newline."""
    return fmt.replace("\\n", "\n") if fmt is not None else fmt
