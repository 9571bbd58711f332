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
    table = CliRunner().invoke(main, ["ops", "--markdown"]).stdout
    cells = [c.strip() for line in table.splitlines()[5:] for c in line.split("|")[2:4]]
    names = [re.sub(r" \(\d+\+\)$", "", n) for c in cells if c != "-" for n in c.split(", ")]
    assert sorted(names) == sorted(r["op"] for r in op_rows())
    gradient = [re.sub(r" \(\d+\+\)$", "", n) for line in table.splitlines()[5:]
                for n in line.split("|")[2].strip().split(", ") if n != "-"]
    assert sorted(gradient) == sorted(r["op"] for r in op_rows() if r["gradient"])
