"""Checking generated C on the host: the host compiler, bit-exact verification, fuzzing."""
