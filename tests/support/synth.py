"""Synthetic Stack Overflow-shaped QA rows for evaluation tests and the benchmark (no downloads)."""

from __future__ import annotations

import random

TOPICS = [
    ("reverse a list", "Use slicing: `items[::-1]` or `items.reverse()` in place.",
     "items = [1, 2, 3]\nprint(items[::-1])"),
    ("read a file line by line", "Iterate over the open file object with a with-statement.",
     "with open('data.txt') as handle:\n    for line in handle:\n        print(line)"),
    ("merge two dictionaries", "Use the union operator `a | b` (Python 3.9+) or `{**a, **b}`.",
     "merged = {**a, **b}"),
    ("sort a list of dicts by a key", "Pass a key function to sorted: `sorted(rows, key=lambda r: r['age'])`.",
     "rows = sorted(rows, key=lambda r: r['age'])"),
    ("check if a file exists", "Use `pathlib.Path(path).exists()` or `os.path.exists`.",
     "from pathlib import Path\nprint(Path('x').exists())"),
    ("convert a string to an int", "Call `int(text)` and catch ValueError for bad input.",
     "try:\n    n = int(text)\nexcept ValueError:\n    n = 0"),
    ("remove duplicates from a list", "Use `list(dict.fromkeys(items))` to keep the order.",
     "unique = list(dict.fromkeys(items))"),
    ("get the current time", "Use `datetime.now()` from the datetime module.",
     "from datetime import datetime\nprint(datetime.now())"),
    ("flatten a nested list", "Use a nested comprehension: `[x for sub in nested for x in sub]`.",
     "flat = [x for sub in nested for x in sub]"),
    ("count word frequencies", "Use `collections.Counter(words)`.",
     "from collections import Counter\ncounts = Counter(words)"),
]
STYLES = ["How do I {t} in Python?", "What is the best way to {t}?", "Python: {t}", "Is there a simple way to {t}?",
          "How can I {t} with the standard library?"]


def qa_rows(n: int, seed: int = 0, start_id: int = 1000) -> list[dict]:
    """n rows with id, question_id, question and answer (answers carry a fenced code block)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic, answer, code = TOPICS[i % len(TOPICS)]
        style = STYLES[rng.randrange(len(STYLES))]
        noise = rng.choice(["", " I tried a loop.", " Performance matters.", " Using Python 3.11."])
        qid = start_id + i
        rows.append({"id": str(qid), "question_id": qid, "question": style.format(t=topic) + noise + f" (#{qid})",
                     "answer": f"{answer}\n\n```python\n{code}\n```"})
    return rows
