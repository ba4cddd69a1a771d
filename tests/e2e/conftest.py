"""The `airflow standalone` shared by the modules that need Airflow's services (test_backfill_airflow,
test_review_rest, test_ui_browser): started once, at the first test that asks for it, stopped after
the last (tests.standalone.SharedStandalone). Starting and stopping one costs 40-60 s on CI.

The modules that use it run one after the other (collection order changed here), so it is not left
running, idle, beside the modules between them.
"""

from __future__ import annotations

import pytest

from tests.standalone import SharedStandalone

FIXTURE = "shared_standalone"
_stacks: list[SharedStandalone] = []
_last_user: list[str] = []


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    users = [item for item in items if FIXTURE in getattr(item, "fixturenames", ())]
    if not users:
        return
    first = items.index(users[0])
    chosen = {id(item) for item in users}
    others = [item for item in items if id(item) not in chosen]
    items[:] = [*others[:first], *users, *others[first:]]
    _last_user[:] = [users[-1].nodeid]


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Stop the shared standalone once the last test that uses it is torn down."""
    if _last_user and item.nodeid == _last_user[0]:
        for stack in _stacks:
            stack.stop()


@pytest.fixture(scope="session")
def shared_standalone(tmp_path_factory: pytest.TempPathFactory):
    stack = SharedStandalone(tmp_path_factory.mktemp("standalone"))
    _stacks.append(stack)
    try:
        stack.start()  # the first module's setup goes on while the services start
        yield stack
    finally:
        stack.stop()
