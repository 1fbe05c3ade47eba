"""The compress job, at the top of the data path: it wires zoo, graph, importance, select, prune,
train and bench into one run (:func:`deploykit.compress_job.pipeline.run`).

``inputs`` checks every name and loads every input before slow work; ``checkpointing``
writes and restores the job's checkpoints; ``report`` assembles ``report.json``.
(Not ``deploykit.compress``: that name is the public function in :mod:`deploykit`.)
"""
