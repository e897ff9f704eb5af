"""The shared layer: choosing the embedding/decoder pair without TensorFlow
(:mod:`.pair`), the Keras layer itself (:mod:`.shared`, imports TensorFlow) and
``tietool run`` (:mod:`.run`)."""
