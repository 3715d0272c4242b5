//! Session tests are in `tests/` (a client over a duplex pipe); this holds the unit ones.
