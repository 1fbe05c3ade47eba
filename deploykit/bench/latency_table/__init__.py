"""Per-layer latency tables: measured once per model and setting, then read by the cost model.

In data-path order: :mod:`~deploykit.bench.latency_table.layers` (the layer calls a table
measures), :mod:`~deploykit.bench.latency_table.timers` (how a backend times them),
:mod:`~deploykit.bench.latency_table.variants` (pruned copies for calibration),
:mod:`~deploykit.bench.latency_table.fit` (monotone fits and cliffs),
:mod:`~deploykit.bench.latency_table.profile` (building a table),
:mod:`~deploykit.bench.latency_table.file` (the table file, its key and cache),
:mod:`~deploykit.bench.latency_table.predictor` (end-to-end latency from a table) and
:mod:`~deploykit.bench.latency_table.cost_model` (attaching its predictions to a compress run's
cost model).
"""
