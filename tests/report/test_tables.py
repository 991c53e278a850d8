"""lightnn.report.tables: markdown tables align numbers right and text left, escape what would break a row, and
refuse ragged rows; CSV keeps raw values; the formatters print the documented text."""

from __future__ import annotations

import csv
import io

import pytest

from lightnn.report.tables import csv_table, fmt_bytes, fmt_count, fmt_ms, fmt_pct, fmt_si, markdown_table


def test_markdown_table_aligns_escapes_and_separates_thousands():
    text = markdown_table(["model", "params"], [["a|b", 1234567], ["c\nd", 12.5]])
    head, rule, r1, r2 = text.splitlines()
    assert rule.startswith("| :--") and rule.endswith("--: |")  # text left, numbers right
    assert "a\\|b" in r1 and "1,234,567" in r1 and "c d" in r2 and r2.endswith("12.5 |")
    assert len({len(head), len(rule), len(r1), len(r2)}) == 1  # every line padded to the same widths


def test_markdown_table_refuses_ragged_rows_and_bad_alignment():
    with pytest.raises(ValueError, match="every row needs 2 cells"):
        markdown_table(["a", "b"], [[1]])
    with pytest.raises(ValueError, match="align needs 2 letters"):
        markdown_table(["a", "b"], [[1, 2]], align="l")


def test_csv_table_keeps_raw_values_and_quotes_commas():
    text = csv_table(["name", "macs", "note"], [["x,y", 1234567, None]])
    assert list(csv.reader(io.StringIO(text))) == [["name", "macs", "note"], ["x,y", "1234567", ""]]


@pytest.mark.parametrize("got,want", [
    (fmt_count(3504872), "3.50"), (fmt_count(3504872, "G", 3), "0.004"), (fmt_count(3504872, ""), "3,504,872"),
    (fmt_si(3504872), "3.50 M"), (fmt_si(3888), "3.89 K"), (fmt_si(12), "12"),
    (fmt_bytes(12.04e6), "12.04 MB"), (fmt_bytes(1790), "1.79 kB"), (fmt_bytes(512), "512 B"),
    (fmt_pct(1, 4), "25.00%"), (fmt_pct(1, 0), "-"), (fmt_ms(0.1234), "0.123"), (fmt_ms(12.345), "12.35"),
    (fmt_ms(123.45), "123.5"),
])
def test_formatters(got, want):
    assert got == want
