//! Liveness calibrations: how the fused network output becomes a raw score and a probability.
//!
//! The two MiniFASNets are fused as upstream does (mean of their softmax vectors); `p_live` is
//! the live component of that mean. The raw score is its log-odds, `ln(p / (1 - p))`, which is
//! unbounded and grows with liveness. A calibration maps it to the reported probability:
//! `probability = sigmoid((score - offset) / temperature)`, and the verdict is live when the
//! probability is at least 0.5, i.e. when `score >= offset`. The offsets were chosen on
//! `nuaa-dev` (see `docs/calibration.md` and the closing note of the engine issue).

use serde::{Deserialize, Serialize};

/// A named calibration profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Calibration {
    /// Fewer live users rejected, more attacks accepted.
    Soft,
    /// The balanced operating point.
    #[default]
    Regular,
    /// Fewer attacks accepted, more live users rejected.
    Hardened,
}

impl Calibration {
    /// Every profile, in order of strictness.
    pub const ALL: [Calibration; 3] = [
        Calibration::Soft,
        Calibration::Regular,
        Calibration::Hardened,
    ];

    /// Upper-case name as the dialects spell it.
    pub fn name(self) -> &'static str {
        match self {
            Calibration::Soft => "SOFT",
            Calibration::Regular => "REGULAR",
            Calibration::Hardened => "HARDENED",
        }
    }

    /// Parses a name case-insensitively.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s))
    }
}

/// Offset and temperature of one profile.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Profile {
    /// Raw score at which the probability is 0.5 (the decision threshold on the score).
    pub offset: f32,
    /// Divides the centred score; larger values give softer probabilities.
    pub temperature: f32,
}

/// The three profiles. In the configuration any subset of them, and of each one's keys, may
/// be given (`[calibrations.regular]` with only `offset`, say); what is not given keeps that
/// profile's default.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Calibrations {
    /// SOFT profile.
    pub soft: Profile,
    /// REGULAR profile.
    pub regular: Profile,
    /// HARDENED profile.
    pub hardened: Profile,
}

impl Default for Calibrations {
    fn default() -> Self {
        Self {
            soft: Profile {
                offset: -1.7,
                temperature: 1.5,
            },
            regular: Profile {
                offset: -0.6,
                temperature: 1.5,
            },
            hardened: Profile {
                offset: 0.9,
                temperature: 1.5,
            },
        }
    }
}

/// A profile as the configuration gives it: either key may be missing.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfilePatch {
    /// Replaces the offset when given.
    offset: Option<f32>,
    /// Replaces the temperature when given.
    temperature: Option<f32>,
}

impl ProfilePatch {
    fn over(self, p: Profile) -> Profile {
        Profile {
            offset: self.offset.unwrap_or(p.offset),
            temperature: self.temperature.unwrap_or(p.temperature),
        }
    }
}

impl<'de> Deserialize<'de> for Calibrations {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// The `[calibrations]` table: any subset of the profiles.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Patch {
            soft: Option<ProfilePatch>,
            regular: Option<ProfilePatch>,
            hardened: Option<ProfilePatch>,
        }
        let p = Patch::deserialize(d)?;
        let def = Calibrations::default();
        let pick = |patch: Option<ProfilePatch>, base: Profile| match patch {
            Some(x) => x.over(base),
            None => base,
        };
        Ok(Calibrations {
            soft: pick(p.soft, def.soft),
            regular: pick(p.regular, def.regular),
            hardened: pick(p.hardened, def.hardened),
        })
    }
}

impl Calibrations {
    /// The profile for `c`.
    pub fn profile(&self, c: Calibration) -> Profile {
        match c {
            Calibration::Soft => self.soft,
            Calibration::Regular => self.regular,
            Calibration::Hardened => self.hardened,
        }
    }
}

/// Clamp that keeps the log-odds finite.
const P_EPS: f32 = 1e-7;

/// Raw liveness score: log-odds of the fused live probability.
pub fn raw_score(p_live: f32) -> f32 {
    let p = p_live.clamp(P_EPS, 1.0 - P_EPS);
    (p / (1.0 - p)).ln()
}

/// Calibrated probability for a raw score under a profile.
pub fn probability(score: f32, profile: Profile) -> f32 {
    let z = (score - profile.offset) / profile.temperature.max(1e-3);
    1.0 / (1.0 + (-z).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_is_at_the_offset_and_monotone() {
        let c = Calibrations::default();
        for cal in Calibration::ALL {
            let p = c.profile(cal);
            assert!((probability(p.offset, p) - 0.5).abs() < 1e-6);
            assert!(probability(p.offset + 1.0, p) > probability(p.offset - 1.0, p));
        }
        assert!(c.soft.offset < c.regular.offset && c.regular.offset < c.hardened.offset);
    }

    #[test]
    fn raw_score_is_log_odds_and_finite() {
        assert!(raw_score(0.5).abs() < 1e-6);
        assert!(raw_score(1.0).is_finite() && raw_score(0.0).is_finite());
        assert!((raw_score(0.9) - 9f32.ln()).abs() < 1e-5);
    }

    #[test]
    fn names_round_trip() {
        for c in Calibration::ALL {
            assert_eq!(Calibration::parse(&c.name().to_lowercase()), Some(c));
        }
        assert_eq!(Calibration::parse("EXTREME"), None);
    }
}
