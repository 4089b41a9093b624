"""A real `python server.py --devices cpu,cpu` process with the pure-Python test nodes, shared by this folder's pool tests."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.server.server_harness import ServerProcess


@pytest.fixture(scope="module")
def pool_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Two CPU worker processes behind one server, both ready."""
    from tests.server.workers.pool_harness import wait_workers_ready

    proc = ServerProcess(tmp_path_factory.mktemp("pool"), "--devices", "cpu,cpu", "--preview-size", "32").start()
    try:
        wait_workers_ready(proc)
        yield proc
    finally:
        code = proc.stop()
    assert code == 0, f"server exited with {code}:\n{proc.log()[-3000:]}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    """A failing pool test shows the end of the server's log (workers, dispatch, restarts) in its report."""
    outcome = yield
    report = outcome.get_result()
    server = getattr(item, "funcargs", {}).get("pool_server")
    if report.failed and isinstance(server, ServerProcess):
        report.sections.append(("server log", server.log()[-6000:]))
