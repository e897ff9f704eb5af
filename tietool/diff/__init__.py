"""``diff``: two checkpoints compared tensor by tensor across layouts and naming
schemes (:mod:`.checkpoints`), names matched by rules (:mod:`.match`), the
optional plot (:mod:`.plot`)."""
