"""``check`` and ``fix``: auditing config against weights over many checkpoints
(:mod:`.check`, :mod:`.scan`) and repairing them (:mod:`.fix`, :mod:`.jsonedit`)."""
