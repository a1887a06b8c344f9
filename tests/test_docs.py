"""True docs (issue 22.6): one statement of the default build time, the book's repository URL, every home of the
package named in the README layout and the package docstring, the glossary's ε without the retired CW rule."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

import dfrobust

ROOT = Path(__file__).resolve().parents[1]
MEASURED = re.compile(r"measured from a fresh clone at commit (\w+): (\d+ min \d+ s)")


def test_the_default_build_time_is_stated_once_the_same_everywhere():
    readme, reproduce = (ROOT / "README.md").read_text(), (ROOT / "book" / "reproduce.md").read_text()
    assert MEASURED.findall(readme) and MEASURED.findall(readme) == MEASURED.findall(reproduce)
    spec = yaml.safe_load((ROOT / "notebooks" / "study.yml").read_text())
    assert not re.search(r"\d+\s*min", spec["profiles"]["default"]), "the profile quotes no second build time"
    assert "not yet measured" not in readme + reproduce


def test_the_book_links_to_this_repository_not_jupyter_books():
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    assert "executablebooks" not in url and url.startswith("https://")
    remote = subprocess.run(["git", "remote", "get-url", "origin"], cwd=ROOT, capture_output=True, text=True)
    if remote.returncode == 0 and remote.stdout.strip().startswith("https://"):
        assert url == remote.stdout.strip().removesuffix(".git")
    else:  # no public remote yet: a placeholder the README tells the reader to set
        assert "OWNER" in url and "OWNER: set it to this repository's URL" in (ROOT / "README.md").read_text()


def test_every_home_of_the_package_is_in_the_readme_layout_and_the_docstring():
    homes = sorted(p.name for p in (ROOT / "src" / "dfrobust").iterdir() if (p / "__init__.py").is_file())
    layout = (ROOT / "README.md").read_text().split("## Layout", 1)[1].split("```", 2)[1]
    chain = next(line for line in layout.splitlines() if line.startswith("src/dfrobust/"))
    assert sorted(re.findall(r"[a-z]+", chain.split(":", 1)[1])) == homes
    documented = re.findall(r"^    ([a-z]+) ", dfrobust.__doc__, re.M)
    assert sorted(documented) == homes


def test_the_glossary_epsilon_has_no_retired_cw_rule():
    text = (ROOT / "book" / "glossary.md").read_text()
    entry = text.split("\nε\n", 1)[1].split("\n\n", 1)[0]
    assert "sqrt{CHW}" not in entry and "CW-L2 has no budget" in entry
