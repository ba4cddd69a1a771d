"""The `airflow standalone` shared by the modules that need Airflow's services (test_backfill_airflow,
test_review_rest, test_ui_browser): started once, at the first test that asks for it, stopped after
the last (tests.standalone.SharedStandalone). Starting and stopping one costs 40-60 s on CI.

The modules that use it run one after the other (collection order changed here), so it is not left
running, idle, beside the modules between them.

While they run (they mostly wait on the scheduler, which runs one task process at a time), the
set-ups of test_history_airflow and test_e2e_airflow, when selected, run in the background
(tests.standalone.LANE): subprocesses over state of their own, which their fixtures then take up.
"""

from __future__ import annotations

import pytest

from tests.conftest import STANDALONE_MODULES
from tests.standalone import LANE, SharedStandalone

FIXTURE = "shared_standalone"
_stacks: list[SharedStandalone] = []
_last_user: list[str] = []
# module -> its set-up that may run in the background (tests.standalone.LANE), when it is selected
BACKGROUND = {"tests.e2e.test_history_airflow": "history", "tests.e2e.test_e2e_airflow": "e2e"}
_background: list[str] = []


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    users = [item for item in items if FIXTURE in getattr(item, "fixturenames", ())]
    if not users:
        return
    modules = {item.nodeid.split("::", 1)[0] for item in users}
    assert modules <= set(STANDALONE_MODULES), (
        f"add {sorted(modules - set(STANDALONE_MODULES))} to tests.conftest.STANDALONE_MODULES "
        "(the modules that share the standalone run on one xdist worker)"
    )
    first = items.index(users[0])
    chosen = {id(item) for item in users}
    others = [item for item in items if id(item) not in chosen]
    items[:] = [*others[:first], *users, *others[first:]]
    _last_user[:] = [users[-1].nodeid]


def pytest_collection_finish(session: pytest.Session) -> None:
    """Note the selected modules whose set-ups may run in the background (after -k / -m deselection)."""
    if hasattr(session.config, "workerinput"):
        return  # an xdist worker: the other worker runs those modules meanwhile
    modules = {getattr(getattr(item, "module", None), "__name__", None) for item in session.items}
    _background[:] = [name for module, name in BACKGROUND.items() if module in modules]


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Stop the shared standalone once the last test that uses it is torn down."""
    if _last_user and item.nodeid == _last_user[0]:
        for stack in _stacks:
            stack.stop()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    LANE.stop()  # a background set-up no test took up (e.g. after -x) stops with the session


def submit_background(request: pytest.FixtureRequest, factory: pytest.TempPathFactory) -> None:
    """Start the selected modules' set-ups in the background (those not done already)."""
    if "history" in _background:
        from tests.e2e.test_history_airflow import build_history

        root = factory.mktemp("history")
        LANE.submit("history", lambda: build_history(root))
    if "e2e" in _background:
        from tests.e2e.test_e2e_airflow import build_e2e

        db = request.getfixturevalue("migrated_airflow_db")
        root = factory.mktemp("e2e")
        LANE.submit("e2e", lambda: build_e2e(root, db))


@pytest.fixture(scope="session")
def shared_standalone(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    stack = SharedStandalone(tmp_path_factory.mktemp("standalone"))
    _stacks.append(stack)
    try:
        stack.start()  # the first module's setup goes on while the services start
        submit_background(request, tmp_path_factory)
        yield stack
    finally:
        stack.stop()
