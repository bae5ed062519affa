"""Every example payload of CONTRACTS.md still parses, read from the document itself.

The hardened codecs refuse absurd values; this proves none of the neighbours' real forms is among
them (28-digit decimals, "0E+8", "0E-8", nulls for falsy fees, naive and aware timestamps). The
examples are dated 2025-11-20, so they are parsed with the receiver's clock set to that day.
"""
import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest

from msd.bus.codecs import parse_market_event, parse_order_event, parse_position_update
from tests import examples
from tests.contract.order_manager_rules import problems

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_DAY = datetime(2025, 11, 20, 12, 0, tzinfo=timezone.utc)
# Which codec reads the examples of each numbered section (§1 is what msd sends: order-manager's rules).
PARSER_OF_SECTION = {"2": parse_order_event, "3": parse_position_update, "4": parse_market_event}


def contracts_path() -> Path:
    """CONTRACTS.md: $MSD_CONTRACTS_MD, else the shared directory next to this checkout (or its worktree root)."""
    if os.environ.get("MSD_CONTRACTS_MD"):
        return Path(os.environ["MSD_CONTRACTS_MD"])
    for candidate in (ROOT.parent / "shared", ROOT.parent.parent / "shared"):
        if (candidate / "CONTRACTS.md").is_file():
            return candidate / "CONTRACTS.md"
    raise AssertionError("CONTRACTS.md not found next to the checkout; set MSD_CONTRACTS_MD to its path")


def json_blocks(text: str) -> list[tuple[str, str]]:
    """(section number, block text) of every ```json block, in document order."""
    blocks, section = [], None
    for match in re.finditer(r"^## (\d+)\.|^```json\n(.*?)^```", text, re.M | re.S):
        if match.group(1):
            section = match.group(1)
        else:
            blocks.append((section, match.group(2)))
    return blocks


BLOCKS = json_blocks(contracts_path().read_text(encoding="utf-8"))


def test_the_document_has_the_examples_we_expect():
    sections = [section for section, _ in BLOCKS]
    assert sections.count("1") == 3 and sections.count("2") == 4 and sections.count("3") == 2
    assert sections.count("4") == 4


@pytest.mark.parametrize("section, block", BLOCKS, ids=[f"s{s}-{i}" for i, (s, _) in enumerate(BLOCKS)])
def test_every_contracts_example_parses(section, block):
    body = block.encode("utf-8")
    if section == "1":
        assert problems(json.loads(body)) == []
        return
    parsed = PARSER_OF_SECTION[section](body, None, now=EXAMPLES_DAY)
    assert parsed is not None


def test_the_test_suites_copies_are_the_documents_examples():
    """tests/examples.py is what the rest of the suite publishes: it must not drift from the document."""
    documented = [json.loads(block) for section, block in BLOCKS if section in PARSER_OF_SECTION]
    copies = [*examples.ORDER_EVENTS, *examples.POSITION_UPDATES, *examples.MARKET_EVENTS.values()]
    assert sorted(map(json.dumps, documented)) == sorted(json.dumps(json.loads(c)) for c in copies)
