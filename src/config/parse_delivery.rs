//! The options of issue 11 part B that change what a client is and where its messages
//! go: `max_qos` / `maximum_qos`, `mount_point` and `use_username_as_clientid` (per
//! listener), `use_subject_as_username` (TLS, per listener), `upgrade_outgoing_qos`,
//! `check_retain_source` and `memory_limit`.
//! Kept out of `parse.rs` so that file keeps one job per block of options; it turns one
//! line into [`Config`](super::Config) fields and never reads files.

use super::error::Error;
use super::parse::Parser;
use super::values::Line;

impl Parser {
    /// One of this file's options; `Ok(false)` when `line` is not one of them.
    pub(super) fn delivery_option(&mut self, line: &Line<'_>) -> Result<bool, Error> {
        match line.option {
            "max_qos" | "maximum_qos" => {
                let qos = line.int(0, 2).map_err(|_| {
                    line.invalid_value(line.rest, "'max_qos' must be between 0 and 2 inclusive")
                })?;
                self.listener(line).max_qos = u8::try_from(qos).unwrap_or(2);
            }
            "mount_point" => {
                let mount = line.string()?;
                // Mosquitto: a valid topic name (no wildcard), taken literally.
                if mount.contains(['+', '#', '\0']) {
                    return Err(line.invalid_value(
                        &mount,
                        "a mount point is a topic prefix: no '+', '#' or NUL",
                    ));
                }
                if mount.contains("%u") || mount.contains("%c") {
                    self.warn(
                        line,
                        "'%u' and '%c' are taken literally in a mount point (as by Mosquitto)",
                    );
                }
                self.listener(line).mount_point = Some(mount);
            }
            "use_username_as_clientid" => {
                self.listener(line).use_username_as_clientid = line.bool()?;
            }
            "use_subject_as_username" => {
                self.tls(line).use_subject_as_username = line.bool()?;
            }
            "upgrade_outgoing_qos" => self.cfg.upgrade_outgoing_qos = line.bool()?,
            "check_retain_source" => self.cfg.check_retain_source = line.bool()?,
            "memory_limit" => self.cfg.memory_limit = line.int(0, i64::MAX)?.unsigned_abs(),
            _ => return Ok(false),
        }
        Ok(true)
    }
}
