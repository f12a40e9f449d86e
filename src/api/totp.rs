//! TOTP step state: per system admin, the last step a code was accepted for, so that a code
//! is good once.

use std::sync::PoisonError;

use super::App;

impl App {
    /// Takes the TOTP step an admin's code matched; false when that step or a later one was
    /// taken already (a replayed code, RFC 6238 section 5.2).
    pub(super) fn claim_totp_step(&self, admin_id: i64, step: u64) -> bool {
        let mut steps = self
            .totp_steps
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match steps.get(&admin_id) {
            Some(last) if *last >= step => false,
            _ => {
                steps.insert(admin_id, step);
                true
            }
        }
    }

    /// Forgets the steps taken with an admin's previous secret (a new enrolment).
    pub(super) fn forget_totp_steps(&self, admin_id: i64) {
        self.totp_steps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&admin_id);
    }
}
