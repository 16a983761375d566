"""Refactors must not change the search: with a fixed seed and the fake engine, `run_search` times the
same candidates in the same order and picks the same winner as recorded in
tests/data/golden_search.json before the code moved. Re-record (only when a change is *meant* to
alter the search) with: python tests/test_search_golden.py --record
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from test_search import SMALL_SPACE, fake_engine

from pocketlm.search.search import run_search
from pocketlm.search.settings import SearchSettings
from pocketlm.search.space import parse_budget

GOLDEN = Path(__file__).parent / "data" / "golden_search.json"


def screening_order(root: Path) -> dict:
    space = root / "space.yaml"
    space.write_text(SMALL_SPACE)
    s = SearchSettings(budget=parse_budget("1M"), out=root / "out", space=str(space), vocab_size=512,
                       prompt_len=32, decode_len=16, max_measure=12, initial=4, batch=3, finalists=2,
                       final_rounds=2, time_budget=1e6, seed=0, threads=2)
    summary = run_search(s, measure_fn=fake_engine(), progress=False, log=lambda m: None)
    records = [json.loads(line) for line in (s.out / "results.jsonl").read_text().splitlines()]
    screened = [r["key"] for r in records if r["phase"] == "screen" and r["role"] == "candidate"]
    return {"screened": screened, "winner": summary["winner"]}


def test_search_screens_the_recorded_candidates_in_order_and_picks_the_same_winner(tmp_path):
    assert screening_order(tmp_path) == json.loads(GOLDEN.read_text())


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: python tests/test_search_golden.py --record")
    with tempfile.TemporaryDirectory() as d:
        GOLDEN.write_text(json.dumps(screening_order(Path(d)), indent=1) + "\n")
    print(f"recorded {GOLDEN}")
