"""Bytes in and out: raw reads, the one fast copy and compare, the hardened HDF5
access, atomic output with its safety checks, signals held off while an output
is put in place. No knowledge of model layouts here."""
