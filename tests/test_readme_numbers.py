"""The README's measured numbers come from committed results files (benchmarks/check_readme.py)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("check_readme", ROOT / "benchmarks" / "check_readme.py")
check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check)


def test_every_readme_number_is_in_a_results_file():
    misses = check.unmatched((ROOT / "README.md").read_text(), check.numbers_in_results())
    assert not misses, "\n".join(f"README.md:{line}: {n}: {text}" for line, n, text in misses)


def test_a_number_matches_at_the_precision_printed_and_code_is_skipped():
    results = {"80.63", "0.5", "91.50"}
    text = "fisher 80.6, ratio 0.49, fp32 91.5, 91.50\n```\nnot checked 1.23\n```\n`--lr 0.02` is a setting\n"
    assert [(n, line) for line, n, _ in check.unmatched(text, results)] == [("0.49", 1)]
