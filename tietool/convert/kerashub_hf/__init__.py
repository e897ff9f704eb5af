"""keras-hub presets <-> transformers 5 folders (issue 25), from declarative family tables.

* :mod:`.families`: per transformers class, the keras-hub variables each tensor comes from, the
  op moving its bytes, the config rules and the settings it cannot represent.
* :mod:`.hfconfig`: the keras-hub backbone config -> the transformers ``config.json``.
* :mod:`.plan`: the table applied to a preset's stored tensors (every tensor used once);
  :mod:`.assemble`: tensors built from parts of others (per-head transposes, GPT-2's fused
  ``c_attn``), written and verified in bounded row blocks.
* :mod:`.export`: ``tietool convert PRESET --names pt``.
"""
