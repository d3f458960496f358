"""docs/python-client.md's examples, run as a reader would run them: each ```python block is a
whole program, run against a real ``wsq serve`` with ``$TOKEN`` set, and must print what the
comments on its ``print`` lines say. The README's Python example (the tour) likewise."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from wsq_harness import SECRET_ACME, Served, serve_config, tenants

from wsq.auth import mint_token

ROOT = Path(__file__).resolve().parents[2]
MANUAL = (ROOT / "docs" / "python-client.md").read_text()
README = (ROOT / "README.md").read_text()


def python_blocks(text: str) -> list[str]:
    return [str(b) for b in re.findall(r"```python\n(.*?)```", text, re.S)]


def said(code: str) -> list[str]:
    """What the program's comments say it prints: the comment of each ``print(`` line."""
    return [
        line.split("#", 1)[1].strip()
        for line in code.splitlines()
        if line.strip().startswith("print(") and "#" in line
    ]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    config = tmp_path_factory.mktemp("pydocs") / "wsq.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [tenants.acme]
            keys = [ {{ kid = "k1", alg = "HS256", secret = "{SECRET_ACME}" }} ]
            redelivery_delay_ms = 100
            """
        )
    )
    with serve_config(config) as server:
        yield server


async def run_example(code: str, served: Served, tmp_path: Path) -> list[str]:
    token = mint_token(
        tenants()["acme"], "alice", publish=("chat.>", "jobs.>"), subscribe=("chat.>", "jobs.>")
    )
    script = tmp_path / "example.py"
    script.write_text(code.replace("127.0.0.1:8000", f"127.0.0.1:{served.port}"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "TOKEN": token},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    return out.decode().splitlines()


def test_the_manual_has_its_examples() -> None:
    blocks = python_blocks(MANUAL)
    assert len(blocks) == 6
    assert all(said(b) for b in blocks), "every example says what it prints"


@pytest.mark.parametrize("index", range(6))
async def test_a_manual_example_prints_what_its_comments_say(
    index: int, served: Served, tmp_path: Path
) -> None:
    code = python_blocks(MANUAL)[index]
    assert await run_example(code, served, tmp_path) == said(code)


async def test_the_readme_tour_example_prints_what_its_comments_say(
    served: Served, tmp_path: Path
) -> None:
    (code,) = python_blocks(README)
    assert "from wsq.client import Client" in code and 'os.environ["TOKEN"]' in code
    printed = await run_example(code, served, tmp_path)
    assert printed == said(code) and len(printed) >= 1
