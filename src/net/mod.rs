//! The event loop: the only module that touches sockets, the clock and signals.
