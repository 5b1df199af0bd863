"""The ``musicgen`` engine: MusicGen conditional stem generation and variation on transformers.

Modules, one concern each:

- :mod:`.engine`: :class:`MusicgenEngine`, the engine the registry names (routing, options, the loaded model).
- :mod:`.loading`: which weights a model name means (a folder, ``<models-dir>/<name>/``, the Hugging Face
  cache), cheap presence checks, loading, and ``stembridge models pull``.
- :mod:`.conditioning`: numpy only: the text prompt, the context as a loop, the plan of generation windows
  on the bar grid, and stitching the windows back into one part.
- :mod:`.sampling`: torch: one batched ``model.generate`` call with seeds, progress and cancel per token.
- :mod:`.isolation`: the target stem out of the generated mix with the demucs engine, when it is there.
- :mod:`.convert` and :mod:`.convert_encodec`: audiocraft fine-tuning checkpoints to the transformers format.
- :mod:`.audiocraft_engine`: the ``audiocraft`` engine, for environments where audiocraft itself imports.

Importing this package imports neither torch nor transformers.
"""

from __future__ import annotations
