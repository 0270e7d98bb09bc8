//! Durations on the command line: `30s`, `1m30s`, `500ms`, `2h`.

use std::time::Duration;

/// Parses a duration, or says what a good one looks like.
pub fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|err| {
        format!("{text:?} is not a duration ({err}); write it like 30s, 1m30s, 500ms or 2h")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_units_and_explains_mistakes() {
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        let err = parse("10").unwrap_err();
        assert!(err.contains("30s, 1m30s"), "{err}");
        assert!(parse("ten seconds").is_err());
    }
}
