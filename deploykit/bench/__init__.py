"""Latency measurement.

Whole models: :mod:`~deploykit.bench.latency` (interleaved ONNX Runtime timing),
:mod:`~deploykit.bench.sweep` (models side by side over batch sizes and thread counts, any
backend), :mod:`~deploykit.bench.memory`, :mod:`~deploykit.bench.macs` and
:mod:`~deploykit.bench.machine` (what else is recorded beside a latency),
:mod:`~deploykit.bench.report` (the bench report's formats) and
:mod:`~deploykit.bench.bundle_results` (results measured elsewhere, read back).
Per-layer latency tables: :mod:`deploykit.bench.latency_table`. In a compress run:
:mod:`~deploykit.bench.latency_check` (a pruned model timed against the base) and
:mod:`~deploykit.bench.speedup_warning` (the line printed when MACs cut will not become speed).
"""
