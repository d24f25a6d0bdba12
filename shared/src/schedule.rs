//! Backup schedules: standard 5-field cron expressions, evaluated in UTC.

use anyhow::{Context, Result};

/// Parses and validates a cron expression such as `0 0 * * *`.
pub fn parse(expression: &str) -> Result<croner::Cron> {
    expression.parse::<croner::Cron>().with_context(|| {
        format!("{expression:?} is not a valid cron schedule (e.g. \"0 3 * * *\" for 03:00 UTC daily)")
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn validates_cron() {
        assert!(super::parse("0 0 * * *").is_ok());
        assert!(super::parse("*/15 2 * * 1-5").is_ok());
        assert!(super::parse("61 0 * * *").is_err());
        assert!(super::parse("nightly").is_err());
    }
}
