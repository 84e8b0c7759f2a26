"""README.md's table of config groups lists exactly the groups and options under conf/."""

import re

import pytest

from chainrule.config.groups import config_dir, config_groups
from tests.support.paths import REPO

README = REPO / "README.md"


def readme_table() -> dict[str, set[str]]:
    """{group: options} from the rows `| `group` | `a`, `b` | what |` of README's config-group table."""
    text = README.read_text()
    table = text[text.index("### Config groups"):]
    rows = {}
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        group = re.fullmatch(r"`([\w/]+)`", cells[0])
        if group:
            rows[group.group(1)] = set(re.findall(r"`([\w-]+)`", cells[1]))
    return rows


def options(group: str) -> set[str]:
    return {p.stem for p in (config_dir() / group).glob("*.yaml")}


def test_the_table_lists_every_config_group() -> None:
    assert set(readme_table()) == set(config_groups())


@pytest.mark.parametrize("group", config_groups())
def test_the_table_lists_every_option_of_the_group(group: str) -> None:
    assert readme_table().get(group) == options(group)
