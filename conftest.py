pytest_plugins = ["tests.personas"]
