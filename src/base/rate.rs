//! A rate of new connections per source (`6/min`), as the config writes it and the
//! kernel's limits count it.

/// A unit of time a rate is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Per {
    Second,
    Minute,
    Hour,
    Day,
}

impl Per {
    pub(crate) const ALL: [Per; 4] = [Per::Second, Per::Minute, Per::Hour, Per::Day];

    pub(crate) fn secs(self) -> u64 {
        match self {
            Per::Second => 1,
            Per::Minute => 60,
            Per::Hour => 3_600,
            Per::Day => 86_400,
        }
    }

    /// As iptables' hashlimit prints it: `sec`, `min`, `hour`, `day`.
    pub(crate) fn word(self) -> &'static str {
        match self {
            Per::Second => "sec",
            Per::Minute => "min",
            Per::Hour => "hour",
            Per::Day => "day",
        }
    }
}

/// New connections per source: `6/min`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rate {
    pub(crate) count: u32,
    pub(crate) per: Per,
}

/// The largest count a rate may have (and so a burst: hashlimit's limit is 10,000).
pub(crate) const MAX_RATE: u32 = 10_000;

impl Rate {
    /// `6/min`, `60/minute`, `2/h`, `100/day`, `5/s`.
    pub(crate) fn parse(text: &str) -> Result<Rate, String> {
        let bad = || format!("'{text}' is not a rate (e.g. 6/min, 2/s, 100/hour, 500/day)");
        let (n, unit) = text.split_once('/').ok_or_else(bad)?;
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || n.len() > 6 {
            return Err(bad());
        }
        let count: u32 = n.parse().map_err(|_| bad())?;
        if count == 0 || count > MAX_RATE {
            return Err(format!("'{text}': the count must be 1 to {MAX_RATE}"));
        }
        let per = match unit {
            "s" | "sec" | "second" => Per::Second,
            "m" | "min" | "minute" => Per::Minute,
            "h" | "hour" => Per::Hour,
            "d" | "day" => Per::Day,
            _ => return Err(bad()),
        };
        Ok(Rate { count, per })
    }

    /// The same rate in the smallest unit that makes its count whole, which is how
    /// iptables prints a rate back (`60/min` is listed as `1/sec`).
    pub(crate) fn canonical(self) -> Rate {
        for per in Per::ALL {
            let n = u64::from(self.count) * per.secs();
            if n % self.per.secs() == 0 {
                return Rate {
                    count: (n / self.per.secs()) as u32,
                    per,
                };
            }
        }
        self
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.count, self.per.word())
    }
}
