"""README.md's supported-ops table is the one `irkit ops --markdown` writes from the registry."""

from __future__ import annotations

import os
import re

from click.testing import CliRunner

from irkit.cli import main

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")
START, END = "<!-- ops table: irkit ops --markdown -->\n", "\n<!-- end of ops table -->"


def test_readme_ops_table_is_the_registry_s():
    with open(README, encoding="utf-8") as f:
        found = re.findall(re.escape(START) + "(.*?)" + re.escape(END), f.read(), re.S)
    assert len(found) == 1, "README.md needs one ops table between the two markers"
    result = CliRunner().invoke(main, ["ops", "--markdown"])
    assert result.exit_code == 0, result.output
    assert found[0] == result.stdout.rstrip("\n"), (
        "README.md's ops table is stale: paste the output of `irkit ops --markdown` between "
        "its markers")


def test_ops_markdown_lists_every_op_once():
    from irkit.cli.graph import op_rows
    lines = CliRunner().invoke(main, ["ops", "--markdown"]).stdout.splitlines()
    rows = lines[lines.index("|---|---|---|") + 1:]

    def names(column: int) -> list[str]:
        return [re.sub(r" \(\d+\+\)$", "", n) for line in rows
                for n in line.split("|")[column].strip().split(", ") if n != "-"]
    assert sorted(names(2) + names(3)) == sorted(r["op"] for r in op_rows())
    assert sorted(names(2)) == sorted(r["op"] for r in op_rows() if r["gradient"])
