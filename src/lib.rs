//! wrenmq: a small, durable MQTT 3.1 / 3.1.1 / 5.0 broker for low-power gateways.
//!
//! ```text
//!  socket bytes ──► net/ (mio loop, the only I/O) ──► protocol/ decode ──► broker/ state machine
//!                       ▲                                                      │
//!                       └──── write buffers ◄── protocol/ encode ◄── output ◄──┘
//! ```
//!
//! - [`protocol`]: sans-IO codec (bytes ⇄ packets), topic rules.
//! - [`broker`]: sessions, subscriptions, retained messages, wills, QoS flows, timers;
//!   driven with `handle_*` / `poll_*` and an explicit `now`.
//! - [`net`]: the single-threaded `mio` event loop; the only module that does I/O.
//! - [`bridge`]: the outbound client to an upstream broker (`connection` blocks), a sans-IO
//!   state machine beside `broker` with the same `handle_*` / `poll_*` shape; not yet
//!   driven by `net`.
//! - [`config`]: typed configuration, defaults and the Mosquitto-style file.
//! - [`store`]: persistence: the append-only log and snapshots in the data directory,
//!   written by one writer thread (the broker encodes the records, the loop hands them over),
//!   and positional reads of single records for queues kept on disk.
//! - [`auth`]: password files (authentication) and ACL files (authorization).
//! - [`cli`], [`logging`]: the command line and logger set-up used by `main`.
//! - [`passwd`]: the `wrenmq passwd` subcommand (Mosquitto password files).
//! - [`privileges`]: dropping root to the configured `user` after start-up.
//! - `fuzzing` (only under `cfg(fuzzing)` and tests): the cargo-fuzz entry points; each
//!   harness body lives beside its code (`protocol`, `net`, `broker`, `store`::fuzzing).

#![forbid(unsafe_code)]

pub mod auth;
pub mod bridge;
pub mod broker;
pub mod cli;
pub mod config;
#[cfg(any(fuzzing, test))]
pub mod fuzzing;
pub mod logging;
pub mod net;
pub mod passwd;
pub mod privileges;
pub mod protocol;
pub mod store;
