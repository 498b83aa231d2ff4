//! Input limits: the bounds certctl puts on what an operator may ask for, in one place, with
//! the reason for each (docs/security.md#input-limits). The inventory ([`crate::inventory`])
//! and the plan ([`crate::plan`]) call these checks; the messages name the limit.
//!
//! Owns: which file modes certctl writes, how long one target's verify may take, which RSA key
//! sizes it handles. Does not own where an error is located (the callers add file:line) nor
//! what is read from disk (that is [`crate::source`]).

use std::time::Duration;

use crate::connector::Role;
use crate::probe::Schedule;

/// `verify.attempts` at most: with the doubling backoff capped at `max_backoff`, 100 probes
/// already span far more than any reload takes to settle.
pub const MAX_VERIFY_ATTEMPTS: u32 = 100;

/// `verify.timeout` (connect + STARTTLS + handshake of one probe) at most. A TLS server that
/// has not answered in 2 minutes is not going to; SMTP greeting delays are seconds.
pub const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(120);

/// `verify.max_backoff` (and so `verify.backoff`) at most: one wait between probes.
pub const MAX_VERIFY_BACKOFF: Duration = Duration::from_secs(600);

/// One target's whole verify at most, however the settings combine: while it runs the new
/// files are live but unproven and the target's lock is held. The probe also stops at this
/// deadline ([`crate::probe::verify`]), whatever the settings say.
pub const MAX_VERIFY_DURATION: Duration = Duration::from_secs(30 * 60);

/// RSA keys from this size (bits) up are accepted.
pub const MIN_RSA_BITS: usize = 2048;

/// RSA keys above this size (bits) are refused: OpenSSL refuses public-key operations with a
/// larger modulus (`OPENSSL_RSA_MAX_MODULUS_BITS`), so no OpenSSL-based client could verify the
/// server's signature, and nginx, apache, haproxy and postfix are OpenSSL-based.
pub const MAX_RSA_BITS: usize = 16384;

/// Bits no file certctl writes may carry: setuid, setgid, sticky and every execute bit.
/// Certificates and keys are data; an executable or set-id key file is a mistake.
const SPECIAL_OR_EXECUTE: u32 = 0o7111;

/// The widest mode a private key file (roles `key`, `bundle`, `keystore`) may have: read and
/// write for its owner, read for its group (a server that reads keys as a group, e.g. caddy).
pub const MAX_KEY_MODE: u32 = 0o640;

/// The mode bits refused for any file certctl writes, whatever its role: `None` when `mode` is
/// acceptable. Shared by the inventory (where the `mode` param is written) and the plan.
pub fn mode_bits_problem(mode: u32) -> Option<String> {
    let bits = mode & SPECIAL_OR_EXECUTE;
    if bits == 0 {
        return None;
    }
    let mut names = Vec::new();
    for (bit, name) in [
        (0o4000, "setuid"),
        (0o2000, "setgid"),
        (0o1000, "sticky"),
        (0o0111, "execute"),
    ] {
        if bits & bit != 0 {
            names.push(name);
        }
    }
    Some(format!(
        "mode {mode:04o} sets the {} bit{}; certificate and key files are data: certctl refuses setuid, setgid, sticky and execute bits (e.g. 0644 for certificates, 0600 or 0640 for keys)",
        names.join(" and "),
        if names.len() > 1 { "s" } else { "" }
    ))
}

/// Whether a file of `role` may be written with `mode`: [`mode_bits_problem`], and for a file
/// holding a private key nothing wider than [`MAX_KEY_MODE`].
pub fn file_mode(role: Role, mode: u32) -> Result<(), String> {
    if let Some(problem) = mode_bits_problem(mode) {
        return Err(problem);
    }
    if role.is_secret() && mode & !MAX_KEY_MODE != 0 {
        return Err(format!(
            "mode {mode:04o} is wider than {MAX_KEY_MODE:04o} for the `{role}` file, which holds the private key: a key may be readable by its owner and group at most (0600 or 0640)"
        ));
    }
    Ok(())
}

/// Which `verify` setting is out of bounds, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyLimit {
    /// `attempts`, `timeout`, `max_backoff`, or `all` when only their combination is.
    pub setting: &'static str,
    pub message: String,
}

/// The bounds of one target's `verify` settings: each setting alone, then the longest the
/// whole verify could take ([`Schedule::worst_case`]).
pub fn verify_settings(schedule: Schedule, timeout: Duration) -> Result<(), VerifyLimit> {
    let fail = |setting, message| Err(VerifyLimit { setting, message });
    if schedule.attempts > MAX_VERIFY_ATTEMPTS {
        return fail(
            "attempts",
            format!(
                "verify.attempts is {}; the limit is {MAX_VERIFY_ATTEMPTS} probes",
                schedule.attempts
            ),
        );
    }
    if timeout > MAX_PROBE_TIMEOUT {
        return fail(
            "timeout",
            format!(
                "verify.timeout is {}; the limit is {} per probe",
                span(timeout),
                span(MAX_PROBE_TIMEOUT)
            ),
        );
    }
    if schedule.max_backoff > MAX_VERIFY_BACKOFF {
        return fail(
            "max_backoff",
            format!(
                "verify.max_backoff is {}; the limit is {} between two probes",
                span(schedule.max_backoff),
                span(MAX_VERIFY_BACKOFF)
            ),
        );
    }
    let worst = schedule.worst_case(timeout);
    if worst > MAX_VERIFY_DURATION {
        return fail(
            "all",
            format!(
                "verify could take {} ({} probes and a quick recheck of up to {} each, plus the waits between them); one target's verify is limited to {}: lower verify.attempts, verify.timeout or verify.max_backoff",
                span(worst),
                schedule.attempts,
                span(timeout),
                span(MAX_VERIFY_DURATION)
            ),
        );
    }
    Ok(())
}

/// `45s`, `2m`, `1h 5m`: how the limits read in messages.
fn span(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_millis() != 0 || secs == 0 {
        return crate::source::format_duration(d);
    }
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let parts: Vec<String> = [(h, "h"), (m, "m"), (s, "s")]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(attempts: u32, backoff: u64, max_backoff: u64) -> Schedule {
        Schedule {
            attempts,
            backoff: Duration::from_secs(backoff),
            max_backoff: Duration::from_secs(max_backoff),
        }
    }

    #[test]
    fn special_and_execute_bits_are_named() {
        assert_eq!(mode_bits_problem(0o644), None);
        assert_eq!(mode_bits_problem(0o600), None);
        let m = mode_bits_problem(0o4755).unwrap();
        assert!(
            m.starts_with("mode 4755 sets the setuid and execute bits;"),
            "{m}"
        );
        let m = mode_bits_problem(0o1644).unwrap();
        assert!(m.starts_with("mode 1644 sets the sticky bit;"), "{m}");
        assert!(mode_bits_problem(0o2640).unwrap().contains("setgid"));
        assert!(mode_bits_problem(0o0700).unwrap().contains("execute"));
    }

    #[test]
    fn keys_are_at_most_0640_and_certificates_are_not_executable() {
        for ok in [0o600, 0o640, 0o400, 0o440, 0o000] {
            assert_eq!(file_mode(Role::Key, ok), Ok(()), "{ok:o}");
        }
        for wide in [0o644, 0o660, 0o604, 0o664] {
            let m = file_mode(Role::Key, wide).unwrap_err();
            assert!(m.contains("wider than 0640 for the `key` file"), "{m}");
            assert!(file_mode(Role::Bundle, wide).is_err());
            assert!(file_mode(Role::Keystore, wide).is_err());
        }
        assert_eq!(file_mode(Role::Fullchain, 0o644), Ok(()));
        assert_eq!(file_mode(Role::Cert, 0o664), Ok(()));
        assert!(file_mode(Role::Cert, 0o755).is_err());
        assert!(file_mode(Role::Rendered, 0o4644).is_err());
    }

    #[test]
    fn verify_bounds_name_the_setting_and_the_limit() {
        let ten = Duration::from_secs(10);
        assert_eq!(verify_settings(schedule(3, 1, 16), ten), Ok(()));
        let e = verify_settings(schedule(1_000_000, 1, 16), ten).unwrap_err();
        assert_eq!(e.setting, "attempts");
        assert!(
            e.message.contains("the limit is 100 probes"),
            "{}",
            e.message
        );
        let e = verify_settings(schedule(3, 1, 16), Duration::from_secs(360_000_000)).unwrap_err();
        assert_eq!(e.setting, "timeout");
        assert!(
            e.message.contains("the limit is 2m per probe"),
            "{}",
            e.message
        );
        let e = verify_settings(schedule(3, 1, 3600), ten).unwrap_err();
        assert_eq!(e.setting, "max_backoff");
        assert!(e.message.contains("10m"), "{}", e.message);
        // Each setting within bounds, together too long: 100 probes of up to 2 minutes.
        let e = verify_settings(schedule(100, 1, 16), MAX_PROBE_TIMEOUT).unwrap_err();
        assert_eq!(e.setting, "all");
        assert!(
            e.message.contains("limited to 30m") && e.message.contains("3h"),
            "{}",
            e.message
        );
    }

    #[test]
    fn spans_read_well() {
        assert_eq!(span(Duration::from_secs(120)), "2m");
        assert_eq!(span(Duration::from_secs(3725)), "1h 2m 5s");
        assert_eq!(span(Duration::from_millis(1500)), "1500ms");
    }
}
