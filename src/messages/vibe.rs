//! `Vibe`: the VIBE credit amount as fixed-point micro-VIBE.
//!
//! Inside the node and in the ledger an amount is an integer count of
//! micro-VIBE (10^-6), so sums are exact. At the edges (wire, API, config)
//! amounts are decimals: a string such as `"12.5"` or a JSON number. NaN,
//! infinity, negatives and more than six decimals are rejected there, never
//! rounded.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Micro-VIBE in one VIBE.
pub const MICROS_PER_VIBE: u64 = 1_000_000;
/// Decimals accepted at the edge.
pub const VIBE_DECIMALS_MAX: usize = 6;
/// Largest amount accepted at the edge: far above any real balance, far below `u64::MAX` so
/// sums of many amounts cannot overflow.
pub const VIBE_MAX: Vibe = Vibe(1_000_000_000_000 * MICROS_PER_VIBE);

/// An amount of VIBE credits in micro-VIBE. Never negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Vibe(u64);

/// Why a decimal could not be read as an amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VibeParseError {
    #[error("amount is empty")]
    /// The input was empty or only whitespace.
    Empty,
    #[error("amount must not be negative")]
    /// The input had a minus sign; amounts are never negative.
    Negative,
    #[error("amount is not a finite decimal number: {0:?}")]
    /// The input is not a finite decimal number (NaN, infinity, garbage).
    NotANumber(String),
    #[error("amount has more than {VIBE_DECIMALS_MAX} decimals: {0:?}")]
    /// The input has more than 6 decimal places (finer than one µVIBE).
    TooManyDecimals(String),
    #[error("amount is larger than the maximum {VIBE_MAX}")]
    /// The amount exceeds [`VIBE_MAX`].
    TooLarge,
}

impl Vibe {
    /// Zero credits.
    pub const ZERO: Vibe = Vibe(0);

    /// An amount from micro-VIBE.
    pub const fn from_micros(micros: u64) -> Self {
        Vibe(micros)
    }

    /// An amount from whole VIBE.
    pub const fn from_whole(vibe: u64) -> Self {
        Vibe(vibe * MICROS_PER_VIBE)
    }

    /// The amount in micro-VIBE.
    pub const fn micros(self) -> u64 {
        self.0
    }

    /// Sum, or `None` on overflow.
    pub fn checked_add(self, other: Vibe) -> Option<Vibe> {
        self.0.checked_add(other.0).map(Vibe)
    }

    /// Difference, or `None` when it would be negative.
    pub fn checked_sub(self, other: Vibe) -> Option<Vibe> {
        self.0.checked_sub(other.0).map(Vibe)
    }

    /// Difference floored at zero.
    pub fn saturating_sub(self, other: Vibe) -> Vibe {
        Vibe(self.0.saturating_sub(other.0))
    }

    /// The amount as a float, for display and scoring only (never for bookkeeping).
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / MICROS_PER_VIBE as f64
    }

    /// Price `units` of something at `rate` VIBE per unit, rounded down to a micro-VIBE.
    /// Used for metered charges (cpu hours, gigabytes) where the quantity is measured.
    pub fn rate_times(rate: Vibe, units: f64) -> Vibe {
        if !units.is_finite() || units <= 0.0 {
            return Vibe::ZERO;
        }
        let micros = (rate.0 as f64 * units).floor();
        if micros >= VIBE_MAX.0 as f64 {
            VIBE_MAX
        } else {
            Vibe(micros as u64)
        }
    }

    /// Parse an edge decimal from a float, rejecting what cannot be exact.
    pub fn from_f64(value: f64) -> Result<Vibe, VibeParseError> {
        if !value.is_finite() {
            return Err(VibeParseError::NotANumber(value.to_string()));
        }
        if value < 0.0 {
            return Err(VibeParseError::Negative);
        }
        // Rust prints the shortest representation that reads back as the same float, so
        // 0.1 is "0.1" and 1e-7 is "0.0000001": the decimal parser then judges the digits.
        format!("{value}").parse()
    }
}

impl FromStr for Vibe {
    type Err = VibeParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.is_empty() {
            return Err(VibeParseError::Empty);
        }
        if text.starts_with('-') {
            return Err(VibeParseError::Negative);
        }
        let digits = text.strip_prefix('+').unwrap_or(text);
        let (whole, fraction) = match digits.split_once('.') {
            Some((whole, fraction)) => (whole, fraction),
            None => (digits, ""),
        };
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if (whole.is_empty() && fraction.is_empty()) || !all_digits(whole) || !all_digits(fraction)
        {
            return Err(VibeParseError::NotANumber(text.to_string()));
        }
        if fraction.len() > VIBE_DECIMALS_MAX {
            return Err(VibeParseError::TooManyDecimals(text.to_string()));
        }
        let whole_value: u64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| VibeParseError::TooLarge)?
        };
        let mut fraction_micros: u64 = 0;
        for (position, digit) in fraction.bytes().enumerate() {
            let scale = 10u64.pow((VIBE_DECIMALS_MAX - 1 - position) as u32);
            fraction_micros += u64::from(digit - b'0') * scale;
        }
        let micros = whole_value
            .checked_mul(MICROS_PER_VIBE)
            .and_then(|m| m.checked_add(fraction_micros))
            .ok_or(VibeParseError::TooLarge)?;
        if micros > VIBE_MAX.0 {
            return Err(VibeParseError::TooLarge);
        }
        Ok(Vibe(micros))
    }
}

impl fmt::Display for Vibe {
    /// Shortest exact decimal: `12`, `12.5`, `0.000001`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / MICROS_PER_VIBE;
        let fraction = self.0 % MICROS_PER_VIBE;
        if fraction == 0 {
            write!(f, "{whole}")
        } else {
            let digits = format!("{fraction:06}");
            write!(f, "{whole}.{}", digits.trim_end_matches('0'))
        }
    }
}

// On the wire and in the API a Vibe is a decimal string.
impl utoipa::PartialSchema for Vibe {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(r"^[0-9]{1,12}(\.[0-9]{1,6})?$"))
            .description(Some("VIBE, a decimal with at most 6 places"))
            .examples(["12.5"])
            .into()
    }
}

impl utoipa::ToSchema for Vibe {}

impl Serialize for Vibe {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Vibe {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct VibeVisitor;
        impl serde::de::Visitor<'_> for VibeVisitor {
            type Value = Vibe;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative decimal amount with at most 6 decimals")
            }
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Vibe, E> {
                value.parse().map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Vibe, E> {
                value
                    .checked_mul(MICROS_PER_VIBE)
                    .filter(|m| *m <= VIBE_MAX.0)
                    .map(Vibe)
                    .ok_or_else(|| E::custom(VibeParseError::TooLarge))
            }
            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Vibe, E> {
                if value < 0 {
                    return Err(E::custom(VibeParseError::Negative));
                }
                self.visit_u64(value as u64)
            }
            fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Vibe, E> {
                Vibe::from_f64(value).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(VibeVisitor)
    }
}

/// The value of `bytes` at `rate_per_gb`.
pub fn bandwidth_value(bytes: u64, rate_per_gb: Vibe) -> Vibe {
    Vibe::rate_times(rate_per_gb, bytes as f64 / 1_000_000_000.0)
}

/// The value of `cpu_seconds` at `rate_per_cpu_hour`.
pub fn compute_value(cpu_seconds: f64, rate_per_cpu_hour: Vibe) -> Vibe {
    Vibe::rate_times(rate_per_cpu_hour, cpu_seconds / 3600.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_decimals() {
        assert_eq!("12.5".parse::<Vibe>(), Ok(Vibe::from_micros(12_500_000)));
        assert_eq!("0.000001".parse::<Vibe>(), Ok(Vibe::from_micros(1)));
        assert_eq!("7".parse::<Vibe>(), Ok(Vibe::from_whole(7)));
        assert_eq!(".5".parse::<Vibe>(), Ok(Vibe::from_micros(500_000)));
        assert_eq!("3.".parse::<Vibe>(), Ok(Vibe::from_whole(3)));
    }

    #[test]
    fn rejects_what_is_not_an_exact_amount() {
        assert_eq!("-1".parse::<Vibe>(), Err(VibeParseError::Negative));
        assert!(matches!(
            "NaN".parse::<Vibe>(),
            Err(VibeParseError::NotANumber(_))
        ));
        assert!(matches!(
            "inf".parse::<Vibe>(),
            Err(VibeParseError::NotANumber(_))
        ));
        assert!(matches!(
            "1e3".parse::<Vibe>(),
            Err(VibeParseError::NotANumber(_))
        ));
        assert!(matches!("".parse::<Vibe>(), Err(VibeParseError::Empty)));
        assert!(matches!(
            ".".parse::<Vibe>(),
            Err(VibeParseError::NotANumber(_))
        ));
        assert!(matches!(
            "0.0000001".parse::<Vibe>(),
            Err(VibeParseError::TooManyDecimals(_))
        ));
        assert_eq!(
            "99999999999999999999".parse::<Vibe>(),
            Err(VibeParseError::TooLarge)
        );
    }

    #[test]
    fn floats_are_judged_by_their_shortest_decimal() {
        assert_eq!(Vibe::from_f64(0.1), Ok(Vibe::from_micros(100_000)));
        assert!(Vibe::from_f64(f64::NAN).is_err());
        assert!(Vibe::from_f64(f64::INFINITY).is_err());
        assert_eq!(Vibe::from_f64(-0.5), Err(VibeParseError::Negative));
        assert!(matches!(
            Vibe::from_f64(1e-7),
            Err(VibeParseError::TooManyDecimals(_))
        ));
    }

    #[test]
    fn json_edge_accepts_strings_and_numbers_and_rejects_bad_ones() {
        let from_json = |text: &str| serde_json::from_str::<Vibe>(text);
        assert_eq!(
            from_json("\"1.25\"").ok(),
            Some(Vibe::from_micros(1_250_000))
        );
        assert_eq!(from_json("3").ok(), Some(Vibe::from_whole(3)));
        assert_eq!(from_json("0.5").ok(), Some(Vibe::from_micros(500_000)));
        assert!(from_json("-2").is_err());
        assert!(from_json("1.1234567").is_err());
        assert!(from_json("\"NaN\"").is_err());
    }

    #[test]
    fn display_round_trips() {
        for micros in [0, 1, 10, 500_000, 1_000_000, 12_345_678, VIBE_MAX.micros()] {
            let vibe = Vibe::from_micros(micros);
            assert_eq!(vibe.to_string().parse::<Vibe>(), Ok(vibe));
        }
        assert_eq!(Vibe::from_micros(12_500_000).to_string(), "12.5");
    }

    #[test]
    fn rate_times_rounds_down_and_ignores_nonsense() {
        assert_eq!(
            Vibe::rate_times(Vibe::from_whole(10), 0.5),
            Vibe::from_whole(5)
        );
        assert_eq!(Vibe::rate_times(Vibe::from_whole(1), f64::NAN), Vibe::ZERO);
        assert_eq!(Vibe::rate_times(Vibe::from_whole(1), -1.0), Vibe::ZERO);
    }
}
