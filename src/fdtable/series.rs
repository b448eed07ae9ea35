//! A process's open-fd count over the session, at a bounded resolution:
//! the session's time is cut into equal buckets, each keeps the largest
//! count seen in it, and when there are `POINTS_MAX` buckets each pair is
//! merged into one twice as long. A session of a second or of a week
//! costs the same few kilobytes and is drawn at the same width.

use super::Nanos;

/// Most buckets kept.
pub const POINTS_MAX: usize = 512;

/// The first buckets' length: 10 ms.
const FIRST_STEP: Nanos = 10_000_000;

#[derive(Clone, Debug)]
pub struct Series {
    start: Nanos,
    step: Nanos,
    /// (bucket index from `start`, largest count in it), in order.
    buckets: Vec<(u64, u32)>,
}

impl Series {
    pub fn new(start: Nanos) -> Series {
        Series {
            start,
            step: FIRST_STEP,
            buckets: Vec::new(),
        }
    }

    pub fn start(&self) -> Nanos {
        self.start
    }

    /// The count was `n` at `time` (times before the start count as the start).
    pub fn note(&mut self, time: Nanos, n: u32) {
        let bucket = time.saturating_sub(self.start) / self.step;
        match self.buckets.last_mut() {
            Some((last, max)) if *last >= bucket => *max = (*max).max(n),
            _ => self.buckets.push((bucket, n)),
        }
        if self.buckets.len() >= POINTS_MAX {
            self.step *= 2;
            let mut merged: Vec<(u64, u32)> = Vec::with_capacity(POINTS_MAX / 2 + 1);
            for &(bucket, n) in &self.buckets {
                match merged.last_mut() {
                    Some((last, max)) if *last == bucket / 2 => *max = (*max).max(n),
                    _ => merged.push((bucket / 2, n)),
                }
            }
            self.buckets = merged;
        }
    }

    /// The points: (start of the bucket, its largest count), oldest first.
    pub fn points(&self) -> impl Iterator<Item = (Nanos, u32)> + '_ {
        self.buckets
            .iter()
            .map(|&(bucket, n)| (self.start + bucket * self.step, n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_series_stays_bounded_and_keeps_its_peak() {
        let mut series = Series::new(1_000);
        let second: Nanos = 1_000_000_000;
        // A day, one count a second, rising to a peak at noon.
        for s in 0..86_400u64 {
            let n = if s <= 43_200 { s } else { 86_400 - s } as u32;
            series.note(1_000 + s * second, n);
        }
        let points: Vec<(Nanos, u32)> = series.points().collect();
        assert!(points.len() < POINTS_MAX, "{} points", points.len());
        assert!(points.len() > POINTS_MAX / 4, "{} points", points.len());
        assert_eq!(points.iter().map(|p| p.1).max(), Some(43_200));
        assert!(points.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(points[0].0, 1_000);
    }

    #[test]
    fn a_bucket_keeps_its_largest_count() {
        let mut series = Series::new(0);
        series.note(1, 5);
        series.note(2, 9);
        series.note(3, 2);
        series.note(FIRST_STEP, 1);
        assert_eq!(
            series.points().collect::<Vec<_>>(),
            [(0, 9), (FIRST_STEP, 1)]
        );
    }
}
