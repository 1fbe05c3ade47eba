"""Every measured number in the README comes from a committed results file.

Each decimal number in the README's prose and tables (code blocks excluded) must appear in
some file under ``benchmarks/results/`` at the precision the README prints it (80.6 matches a
results file's 80.60 or 80.63; 0.49 does not match 0.5). Numbers that are not measurements
(versions of Python, CUDA, TensorRT and JetPack; settings such as ``conf 0.25``) are listed
in ``NOT_MEASURED`` with the reason; anything else unmatched is printed and the exit code is 1.

    python benchmarks/check_readme.py [README.md]
"""

from __future__ import annotations

import re
import sys
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
NUMBER = re.compile(r"(?<![\w.])-?\d+\.\d+(?![\w.])")
# Numbers that are versions or settings, not measurements: (number, a word on the same line).
NOT_MEASURED = {
    ("3.11", "Python"), ("3.10", "Python"), ("3.10", "3.10)"), ("8.6", "JetPack"), ("5.1", "JetPack"),
    ("6.0", "JetPack"), ("6.1", "JetPack"), ("10.0", "from"), ("12.2", "CUDA"), ("13.0", "CUDA"),
    ("11.4", "CUDA"), ("0.25", "conf"), ("0.7", "iou"), ("0.7", "IoU"), ("0.001", "conf"), ("0.5", "--target"),
}


def numbers_in_results() -> set[str]:
    """Every decimal number in the committed results (Markdown and JSON), as written."""
    found: set[str] = set()
    for path in RESULTS.rglob("*"):
        if path.is_file() and path.suffix in (".md", ".json"):
            found.update(NUMBER.findall(path.read_text(errors="replace")))
    return found


def prose_lines(readme: str) -> list[tuple[int, str]]:
    """README lines outside fenced code blocks, with their numbers, inline code removed."""
    out, fenced = [], False
    for i, line in enumerate(readme.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            out.append((i, re.sub(r"`[^`]*`", "", line)))
    return out


def unmatched(readme: str, results: set[str]) -> list[tuple[int, str, str]]:
    """``(line, number, text)`` of every README number no results file has at its precision."""
    by_places: dict[int, set[Decimal]] = {}
    misses = []
    for i, line in prose_lines(readme):
        for n in NUMBER.findall(line):
            if any(n == num and word in line for num, word in NOT_MEASURED):
                continue
            places = -Decimal(n).as_tuple().exponent
            if places not in by_places:
                q = Decimal(1).scaleb(-places)
                # As strings: Decimal("91.50") == Decimal("91.5"), and a set keeps only one of them.
                exact = [Decimal(r) for r in results]
                by_places[places] = {r.quantize(q) for r in exact if -r.as_tuple().exponent >= places}
            if Decimal(n) not in by_places[places]:
                misses.append((i, n, line.strip()[:120]))
    return misses


def main() -> int:
    readme = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "README.md"
    misses = unmatched(readme.read_text(), numbers_in_results())
    for line, n, text in misses:
        print(f"{readme.name}:{line}: {n} is in no file under benchmarks/results: {text}")
    print(f"{len(misses)} number(s) without a results file")
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
