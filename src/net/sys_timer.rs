//! The `$SYS` timer: the loop's only periodic wake-up, and only with `sys_interval` set.
//! With `sys_interval 0` no deadline exists and an idle broker still sleeps without a
//! timeout. The broker does the work ([`crate::broker::Broker::handle_sys_update`]).

use std::time::Instant;

use super::Core;

impl Core {
    /// Updates `$SYS` when it is due (at start, then every `sys_interval`), and follows a
    /// reload that changed the interval (0 stops the timer; a new interval applies from
    /// the next update).
    pub(super) fn handle_sys(&mut self, now: Instant) {
        let interval = self.broker.config().sys_interval;
        if interval.is_zero() {
            self.sys_due = None;
            return;
        }
        if self.sys_due.is_some_and(|due| due > now) {
            return;
        }
        self.broker.handle_sys_update(now);
        self.sys_due = now.checked_add(interval);
    }
}
