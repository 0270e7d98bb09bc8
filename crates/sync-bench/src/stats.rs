//! Medians and 99th percentiles of samples.

use std::time::Duration;

/// A summary of samples: count, median, 99th percentile (nearest rank), minimum and maximum.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    /// How many samples.
    pub n: usize,
    /// The median.
    pub median: f64,
    /// The 99th percentile (the maximum when there are fewer than 100 samples).
    pub p99: f64,
    /// The smallest sample.
    pub min: f64,
    /// The largest sample.
    pub max: f64,
}

impl Summary {
    /// Summarises `samples` (any unit). `None` for no samples.
    pub fn of(samples: &[f64]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank =
            |q: f64| sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
        Some(Self {
            n: sorted.len(),
            median: rank(0.5),
            p99: rank(0.99),
            min: sorted[0],
            max: sorted[sorted.len() - 1],
        })
    }

    /// Summarises durations, in seconds.
    pub fn of_durations(samples: &[Duration]) -> Option<Self> {
        Self::of(
            &samples
                .iter()
                .map(Duration::as_secs_f64)
                .collect::<Vec<_>>(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_p99_by_nearest_rank() {
        let samples: Vec<f64> = (1..=200).map(f64::from).collect();
        let s = Summary::of(&samples).unwrap();
        assert_eq!(
            (s.n, s.median, s.p99, s.min, s.max),
            (200, 100.0, 198.0, 1.0, 200.0)
        );
        let few = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((few.median, few.p99), (2.0, 3.0));
        assert!(Summary::of(&[]).is_none());
    }
}
