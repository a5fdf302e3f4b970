//! Repeated measurements and what the report says about them.

use std::time::{Duration, Instant};

/// The timings of one contestant, in milliseconds.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    pub label: String,
    pub ms: Vec<f64>,
}

impl Samples {
    pub fn new(label: impl Into<String>) -> Samples {
        Samples {
            label: label.into(),
            ms: Vec::new(),
        }
    }

    pub fn push(&mut self, d: Duration) {
        self.ms.push(d.as_secs_f64() * 1000.0);
    }

    pub fn median(&self) -> f64 {
        let mut v = self.ms.clone();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v.get(n / 2).copied().unwrap_or(f64::NAN),
            n => {
                let a = v.get(n / 2 - 1).copied().unwrap_or(f64::NAN);
                let b = v.get(n / 2).copied().unwrap_or(f64::NAN);
                (a + b) / 2.0
            }
        }
    }

    pub fn raw(&self) -> String {
        self.ms
            .iter()
            .map(|m| format!("{m:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Time one run of `f`.
pub async fn timed<T, F: std::future::Future<Output = T>>(f: F) -> (T, Duration) {
    let start = Instant::now();
    let out = f.await;
    (out, start.elapsed())
}

/// A target and whether this run met it.
pub struct Verdict {
    pub target: String,
    pub measured: String,
    pub met: bool,
}

impl Verdict {
    pub fn row(&self) -> String {
        format!(
            "| {} | {} | {} |",
            self.target,
            self.measured,
            if self.met { "met" } else { "**not met**" }
        )
    }
}
