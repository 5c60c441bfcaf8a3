pytest_plugins = ["tests.personas", "tests.fake_stripe"]
