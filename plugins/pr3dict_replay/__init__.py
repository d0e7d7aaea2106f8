"""Recording, replay and shadow trading (``docs/recording.md``, ``docs/replay.md``).

``pr3dict record`` captures a pipeline's public market data; the ``replay`` venue plays a
recording through the connectors' own parsing and fills orders locally; shadow runs
(``[pipeline] mode = "shadow"``) do the same against live public data; ``pr3dict test``
runs the ``[[tests]]`` of pipeline files.
"""
