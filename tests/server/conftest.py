"""One real `python server.py` process shared by the route tests of this folder."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.server.server_harness import ServerProcess


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with the test nodes, a 1 MB upload limit, on a free loopback port."""
    base = tmp_path_factory.mktemp("server")
    proc = ServerProcess(base, "--max-upload-size", "1", "--workflows-directory", str(base / "workflows")).start()
    yield proc
    code = proc.stop()
    assert code == 0, f"server exited with {code}:\n{proc.log()[-3000:]}"
