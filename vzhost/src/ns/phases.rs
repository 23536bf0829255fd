//! Timed phases: where a start spends its time, logged at debug level
//! for the bench.
/// How long each phase of a piece of work took, in the order they ran
/// (a VPS's start, its launcher's part of it).
pub struct Phases {
    last: std::time::Instant,
    took: Vec<(&'static str, std::time::Duration)>,
}

impl Default for Phases {
    fn default() -> Self {
        Self {
            last: std::time::Instant::now(),
            took: Vec::new(),
        }
    }
}

impl Phases {
    /// `phase` ends now; it began where the one before it ended.
    pub fn mark(&mut self, phase: &'static str) {
        let now = std::time::Instant::now();
        self.took.push((phase, now - self.last));
        self.last = now;
    }
}

/// `phase=1.234ms phase=...`: what the bench parses.
impl std::fmt::Display for Phases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (phase, took)) in self.took.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(f, "{sep}{phase}={:.3}ms", took.as_secs_f64() * 1e3)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_read_in_order_as_name_equals_milliseconds() {
        let mut p = Phases::default();
        p.mark("one");
        std::thread::sleep(std::time::Duration::from_millis(2));
        p.mark("two");
        let text = p.to_string();
        let parsed: Vec<(&str, f64)> = text
            .split(' ')
            .map(|kv| {
                let (k, v) = kv.split_once('=').expect("name=value");
                (
                    k,
                    v.strip_suffix("ms").expect("ms").parse().expect("number"),
                )
            })
            .collect();
        assert_eq!(parsed.len(), 2, "{text}");
        assert_eq!((parsed[0].0, parsed[1].0), ("one", "two"));
        assert!(parsed[1].1 >= 2.0, "{text}");
    }
}
