pytest_plugins = ["tests.personas", "tests.fake_upstream", "tests.fake_stripe", "tests.catalogs"]


import pytest  # noqa: E402


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Expose each phase's report on the test item (`item.rep_call`), for failure screenshots."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
