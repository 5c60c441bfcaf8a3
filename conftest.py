pytest_plugins = ["tests.personas", "tests.fake_upstream", "tests.fake_stripe"]
