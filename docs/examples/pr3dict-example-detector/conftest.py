# Enables pr3dict's pytest plugin: fixtures pr3dict_pm, register_plugin, span_exporter,
# tracer_provider and run_pr3dict.
pytest_plugins = ["pr3dict_core.testing"]
