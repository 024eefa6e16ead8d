//! Delay distributions for think time and the mock LLM's latency, written on the command
//! line as `50`, `fixed:50`, `uniform:10-90` or `exp:40` (milliseconds).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Dist {
    Fixed(f64),
    Uniform {
        min: f64,
        max: f64,
    },
    /// Exponential with this mean: many short delays and a long tail, like real backends.
    Exp(f64),
}

impl Dist {
    pub fn sample(&self) -> Duration {
        let ms = match *self {
            Dist::Fixed(ms) => ms,
            Dist::Uniform { min, max } if max > min => rand::thread_rng().gen_range(min..max),
            Dist::Uniform { min, .. } => min,
            // Inverse transform; `1 - u` is in (0, 1], so the logarithm is finite.
            Dist::Exp(mean) => -mean * (1.0 - rand::thread_rng().gen::<f64>()).ln(),
        };
        Duration::from_secs_f64(ms.max(0.0) / 1000.0)
    }

    pub fn is_zero(&self) -> bool {
        matches!(*self, Dist::Fixed(ms) if ms == 0.0)
    }
}

impl FromStr for Dist {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ms = |v: &str| -> Result<f64, String> {
            match v.trim().parse::<f64>() {
                Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
                _ => Err(format!(
                    "{v:?} is not a non-negative number of milliseconds"
                )),
            }
        };
        let (kind, value) = s.split_once(':').unwrap_or(("fixed", s));
        match kind {
            "fixed" => Ok(Dist::Fixed(ms(value)?)),
            "exp" => Ok(Dist::Exp(ms(value)?)),
            "uniform" => {
                let (lo, hi) = value
                    .split_once('-')
                    .ok_or("uniform needs MIN-MAX, e.g. uniform:10-90")?;
                let (min, max) = (ms(lo)?, ms(hi)?);
                if min > max {
                    return Err(format!("uniform:{value}: MIN is above MAX"));
                }
                Ok(Dist::Uniform { min, max })
            }
            other => Err(format!(
                "unknown distribution {other:?}: use MS, fixed:MS, uniform:MIN-MAX or exp:MEAN"
            )),
        }
    }
}

impl fmt::Display for Dist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dist::Fixed(ms) => write!(f, "fixed:{ms}"),
            Dist::Uniform { min, max } => write!(f, "uniform:{min}-{max}"),
            Dist::Exp(mean) => write!(f, "exp:{mean}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!("50".parse::<Dist>().unwrap(), Dist::Fixed(50.0));
        assert_eq!("fixed:2.5".parse::<Dist>().unwrap(), Dist::Fixed(2.5));
        assert_eq!(
            "uniform:10-90".parse::<Dist>().unwrap(),
            Dist::Uniform {
                min: 10.0,
                max: 90.0
            }
        );
        assert_eq!("exp:40".parse::<Dist>().unwrap(), Dist::Exp(40.0));
        assert!("uniform:90-10".parse::<Dist>().is_err());
        assert!("normal:5".parse::<Dist>().is_err());
        assert!("-3".parse::<Dist>().is_err());
    }

    #[test]
    fn samples_stay_in_range_and_exp_has_its_mean() {
        let u = Dist::Uniform {
            min: 10.0,
            max: 20.0,
        };
        for _ in 0..1000 {
            let d = u.sample().as_secs_f64() * 1000.0;
            assert!((10.0..20.0).contains(&d), "{d}");
        }
        let n = 20_000;
        let mean = (0..n)
            .map(|_| Dist::Exp(40.0).sample().as_secs_f64() * 1000.0)
            .sum::<f64>()
            / n as f64;
        assert!((36.0..44.0).contains(&mean), "{mean}");
    }
}
