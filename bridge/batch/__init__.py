"""Many items in one command: ``stembridge batch separate FOLDER...`` and ``stembridge batch run MANIFEST``.

- :mod:`bridge.batch.items`: what to do (the audio files under folders and globs, or a manifest's requests);
- :mod:`bridge.batch.state`: the state file that makes a batch resumable (each finished item by content hash);
- :mod:`bridge.batch.work`: one item in a worker, its engine kept warm, its files handed back as bytes;
- :mod:`bridge.batch.executor`: the interface of where items run, and the local process pool;
- :mod:`bridge.batch.ray_executor`: the same on a Ray cluster (``stembridge[cluster]``);
- :mod:`bridge.batch.driver`: the loop: plan, skip what is done, dispatch, publish all-or-nothing, record;
- :mod:`bridge.batch.report`: the summary, as text or JSON.

Workers never write into the output folder: they hand each item's files back to the driver, which alone
publishes them (:class:`bridge.audio.writer.Publisher`) and records them, so an item's outputs appear exactly
once however its worker ended.
"""
