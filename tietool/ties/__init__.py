"""Ties: the naming and config rules as data (:mod:`.rules`, :mod:`.data`), finding
the members of a tie from headers alone (:mod:`.detect`), proving it by a
streaming comparison (:mod:`.compare`, :mod:`.majority`) into a typed report
(:mod:`.verify`)."""
