"""The network of Zhang (2016) and its training: pure functions of arrays."""
