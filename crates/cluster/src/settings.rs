//! `/etc/default/o2cb`: how the o2cb service starts and how quickly it gives up on
//! a node.
//!
//! The file is a shell fragment of `NAME=value` lines (values may be quoted; `#`
//! starts a comment). The variables and their meaning:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `O2CB_ENABLED` | `false` | start the cluster stack at boot |
//! | `O2CB_STACK` | `o2cb` | the cluster stack's name |
//! | `O2CB_BOOTCLUSTER` | (none) | the cluster, from cluster.conf, to join |
//! | `O2CB_HEARTBEAT_THRESHOLD` | 31 | disk heartbeat: a node is dead after this many 2-second beats without an update, less one |
//! | `O2CB_IDLE_TIMEOUT_MS` | 30000 | network: a connection with no traffic for this long is dead |
//! | `O2CB_KEEPALIVE_DELAY_MS` | 2000 | network: send a keepalive after this long without traffic |
//! | `O2CB_RECONNECT_DELAY_MS` | 2000 | network: wait this long between connection attempts |
//!
//! The seed sets threshold 21 (a node is dead after 40 s), idle timeout 15 s,
//! keepalive and reconnect delays 2 s. Other variables are left to the shell that
//! reads the file and ignored here.

use std::time::Duration;

/// The disk heartbeat's period: one write of each node's sector per beat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);

/// The smallest threshold o2hb accepts.
pub const MIN_HEARTBEAT_THRESHOLD: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct O2cbSettings {
    pub enabled: bool,
    pub stack: String,
    pub boot_cluster: Option<String>,
    pub heartbeat_threshold: u32,
    pub idle_timeout: Duration,
    pub keepalive_delay: Duration,
    pub reconnect_delay: Duration,
}

impl Default for O2cbSettings {
    fn default() -> Self {
        O2cbSettings {
            enabled: false,
            stack: "o2cb".to_string(),
            boot_cluster: None,
            heartbeat_threshold: 31,
            idle_timeout: Duration::from_millis(30_000),
            keepalive_delay: Duration::from_millis(2_000),
            reconnect_delay: Duration::from_millis(2_000),
        }
    }
}

/// A problem in the settings file, at a place in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct SettingsError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl O2cbSettings {
    /// How long a node's heartbeat sector may go unchanged before it is dead.
    pub fn dead_time(&self) -> Duration {
        HEARTBEAT_INTERVAL * self.heartbeat_threshold.saturating_sub(1)
    }

    /// Reads the file's variables over the defaults. `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<O2cbSettings, SettingsError> {
        let mut settings = O2cbSettings::default();
        let mut keepalive_at = (0, 0);
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let indent = raw.len() - raw.trim_start().len();
            let error = |column: usize, message: String| SettingsError {
                file: file.to_string(),
                line,
                column,
                message,
            };
            let assignment = trimmed.strip_prefix("export ").unwrap_or(trimmed);
            let Some((name, value)) = assignment.split_once('=') else {
                return Err(error(
                    indent + 1,
                    format!("expected NAME=value, found '{trimmed}'"),
                ));
            };
            let value_column = indent + (trimmed.len() - assignment.len()) + name.len() + 2;
            let value = unquote(value.trim_end())
                .ok_or_else(|| error(value_column, "unterminated quote".to_string()))?;
            let number = |min: u64| -> Result<u64, SettingsError> {
                match value.parse::<u64>() {
                    Ok(n) if n >= min => Ok(n),
                    Ok(n) => Err(error(
                        value_column,
                        format!("{name} is {n}; it must be at least {min}"),
                    )),
                    Err(_) => Err(error(
                        value_column,
                        format!("{name} must be a number, not '{value}'"),
                    )),
                }
            };
            match name {
                "O2CB_ENABLED" => {
                    settings.enabled = match value.as_str() {
                        "true" => true,
                        "false" | "" => false,
                        _ => {
                            return Err(error(
                                value_column,
                                format!("O2CB_ENABLED must be true or false, not '{value}'"),
                            ))
                        }
                    }
                }
                "O2CB_STACK" => settings.stack = value,
                "O2CB_BOOTCLUSTER" => {
                    settings.boot_cluster = (!value.is_empty()).then_some(value);
                }
                "O2CB_HEARTBEAT_THRESHOLD" => {
                    settings.heartbeat_threshold =
                        u32::try_from(number(u64::from(MIN_HEARTBEAT_THRESHOLD))?)
                            .map_err(|_| error(value_column, format!("{name} is too large")))?;
                }
                "O2CB_IDLE_TIMEOUT_MS" => settings.idle_timeout = Duration::from_millis(number(1)?),
                "O2CB_KEEPALIVE_DELAY_MS" => {
                    settings.keepalive_delay = Duration::from_millis(number(1)?);
                    keepalive_at = (line, value_column);
                }
                "O2CB_RECONNECT_DELAY_MS" => {
                    settings.reconnect_delay = Duration::from_millis(number(1)?)
                }
                _ => {}
            }
        }
        if settings.keepalive_delay >= settings.idle_timeout {
            // o2net's own rule: a keepalive must arrive before the idle timeout fires.
            return Err(SettingsError {
                file: file.to_string(),
                line: keepalive_at.0.max(1),
                column: keepalive_at.1.max(1),
                message: format!(
                    "O2CB_KEEPALIVE_DELAY_MS ({} ms) must be less than O2CB_IDLE_TIMEOUT_MS ({} ms)",
                    settings.keepalive_delay.as_millis(),
                    settings.idle_timeout.as_millis()
                ),
            });
        }
        Ok(settings)
    }
}

/// Strips one level of shell quoting from a simple value.
fn unquote(value: &str) -> Option<String> {
    for quote in ['"', '\''] {
        if let Some(rest) = value.strip_prefix(quote) {
            return rest.strip_suffix(quote).map(str::to_string);
        }
    }
    Some(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = "\
# O2CB_ENABLED: 'true' means to load the driver on boot.
O2CB_ENABLED=true
O2CB_STACK=o2cb
O2CB_BOOTCLUSTER=tclust
O2CB_HEARTBEAT_THRESHOLD=21
O2CB_IDLE_TIMEOUT_MS=15000
O2CB_KEEPALIVE_DELAY_MS=2000
O2CB_RECONNECT_DELAY_MS=2000
";

    #[test]
    fn the_seed_settings() {
        let s = O2cbSettings::parse(SEED, "o2cb").unwrap();
        assert!(s.enabled);
        assert_eq!(s.boot_cluster.as_deref(), Some("tclust"));
        assert_eq!(s.heartbeat_threshold, 21);
        assert_eq!(s.dead_time(), Duration::from_secs(40));
        assert_eq!(s.idle_timeout, Duration::from_millis(15000));
        assert_eq!(s.keepalive_delay, Duration::from_millis(2000));
        assert_eq!(s.reconnect_delay, Duration::from_millis(2000));
    }

    #[test]
    fn defaults_and_quotes() {
        let s = O2cbSettings::parse("O2CB_BOOTCLUSTER=\"c1\"\n", "o2cb").unwrap();
        assert_eq!(s.boot_cluster.as_deref(), Some("c1"));
        assert_eq!(s.dead_time(), Duration::from_secs(60));
    }

    #[test]
    fn bad_values_name_their_place() {
        let cases = [
            ("O2CB_HEARTBEAT_THRESHOLD=soon\n", 1, 26),
            ("\nO2CB_ENABLED=maybe\n", 2, 14),
            ("O2CB_HEARTBEAT_THRESHOLD=1\n", 1, 26),
            (
                "O2CB_IDLE_TIMEOUT_MS=1000\nO2CB_KEEPALIVE_DELAY_MS=2000\n",
                2,
                25,
            ),
            ("just words\n", 1, 1),
            ("O2CB_STACK=\"o2cb\n", 1, 12),
        ];
        for (text, line, column) in cases {
            let e = O2cbSettings::parse(text, "o2cb").unwrap_err();
            assert_eq!((e.line, e.column), (line, column), "{text:?}: {e}");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in "[A-Z0-9_=\"' \n#]{0,120}") {
            let _ = O2cbSettings::parse(&text, "p");
        }
    }
}
