//! Knock sequences: what a sequence is, how it is drawn from the
//! operating system's CSPRNG, and how it is written for the client (the
//! legacy body) and for knockd (a `Sequence` line).

use std::fmt;

use rand::rngs::{StdRng, SysRng};
use rand::{Rng, RngExt, SeedableRng};

/// knockd 0.8 reads at most this many knocks from a sequence line.
pub const MAX_KNOCKS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl std::str::FromStr for Proto {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            _ => Err(()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Knock {
    pub port: u16,
    pub proto: Proto,
}

impl fmt::Display for Knock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.port, self.proto.as_str())
    }
}

/// A drawn sequence. `Debug` hides the knocks: an issued sequence is a
/// secret until used and must not reach a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Sequence(Vec<Knock>);

impl fmt::Debug for Sequence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sequence({} knocks)", self.0.len())
    }
}

impl Sequence {
    pub fn knocks(&self) -> &[Knock] {
        &self.0
    }

    /// The answer body exactly as generate.php printed it: every knock
    /// preceded by one space, ` P1:proto P2:proto …`.
    pub fn http_body(&self) -> String {
        self.0.iter().map(|k| format!(" {k}")).collect()
    }

    /// The line for knockd's one-time file: ` P1:proto,P2:proto,…`. The
    /// leading space is what knockd overwrites with `#` once it is used.
    pub fn door_line(&self) -> String {
        let knocks: Vec<String> = self.0.iter().map(Knock::to_string).collect();
        format!(" {}", knocks.join(","))
    }
}

/// What a sequence may contain, checked at start-up so drawing cannot fail
/// for lack of ports.
#[derive(Debug, Clone)]
pub struct SequenceSpec {
    length: usize,
    /// Every usable port: the range minus the excluded ports.
    ports: Vec<u16>,
    protocols: Vec<Proto>,
}

impl SequenceSpec {
    /// `None` unless 1 <= length <= 32, `ports` holds at least `length`
    /// distinct ports and `protocols` is not empty.
    pub fn new(length: usize, mut ports: Vec<u16>, protocols: Vec<Proto>) -> Option<Self> {
        ports.sort_unstable();
        ports.dedup();
        let fits = (1..=MAX_KNOCKS).contains(&length) && ports.len() >= length;
        (fits && !protocols.is_empty()).then_some(SequenceSpec {
            length,
            ports,
            protocols,
        })
    }

    pub fn length(&self) -> usize {
        self.length
    }

    /// Draws with the given generator: distinct ports, protocols at random.
    pub fn draw_with(&self, rng: &mut impl Rng) -> Sequence {
        let picks = rand::seq::index::sample(rng, self.ports.len(), self.length);
        let knocks = picks
            .into_iter()
            .map(|i| Knock {
                port: self.ports[i],
                proto: self.protocols[rng.random_range(0..self.protocols.len())],
            })
            .collect();
        Sequence(knocks)
    }

    /// Draws from a generator freshly keyed by the operating system's
    /// CSPRNG, so no draw can be predicted from another. A failing OS
    /// source is an error for the caller (a 503), never a panic.
    pub fn draw(&self) -> Result<Sequence, rand::rngs::SysError> {
        let mut rng = StdRng::try_from_rng(&mut SysRng)?;
        Ok(self.draw_with(&mut rng))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn spec(length: usize, lo: u16, hi: u16, protocols: Vec<Proto>) -> SequenceSpec {
        SequenceSpec::new(length, (lo..=hi).collect(), protocols).unwrap()
    }

    #[test]
    fn the_body_and_the_door_line_have_the_legacy_format() {
        let s = Sequence(vec![
            Knock {
                port: 15001,
                proto: Proto::Tcp,
            },
            Knock {
                port: 24999,
                proto: Proto::Udp,
            },
        ]);
        assert_eq!(s.http_body(), " 15001:tcp 24999:udp");
        assert_eq!(s.door_line(), " 15001:tcp,24999:udp");
    }

    #[test]
    fn drawn_ports_are_distinct_in_range_and_use_allowed_protocols() {
        let sp = spec(32, 15000, 15040, vec![Proto::Udp]);
        for _ in 0..200 {
            let s = sp.draw().unwrap();
            let ports: HashSet<u16> = s.knocks().iter().map(|k| k.port).collect();
            assert_eq!(ports.len(), 32);
            assert!(ports.iter().all(|p| (15000..=15040).contains(p)));
            assert!(s.knocks().iter().all(|k| k.proto == Proto::Udp));
        }
    }

    #[test]
    fn a_range_exactly_as_large_as_the_length_uses_every_port() {
        let sp = spec(5, 100, 104, vec![Proto::Tcp]);
        let mut ports: Vec<u16> = sp.draw().unwrap().knocks().iter().map(|k| k.port).collect();
        ports.sort();
        assert_eq!(ports, vec![100, 101, 102, 103, 104]);
    }

    #[test]
    fn both_protocols_and_many_ports_turn_up() {
        let sp = spec(5, 15000, 25000, vec![Proto::Tcp, Proto::Udp]);
        let mut protos = HashSet::new();
        let mut ports = HashSet::new();
        for _ in 0..100 {
            for k in sp.draw().unwrap().knocks() {
                protos.insert(k.proto);
                ports.insert(k.port);
            }
        }
        assert_eq!(protos.len(), 2);
        assert!(
            ports.len() > 400,
            "500 draws from 10001 ports gave only {} distinct",
            ports.len()
        );
    }

    #[test]
    fn impossible_specs_are_refused() {
        assert!(SequenceSpec::new(0, vec![1, 2], vec![Proto::Tcp]).is_none());
        assert!(SequenceSpec::new(33, (1..=100).collect(), vec![Proto::Tcp]).is_none());
        assert!(SequenceSpec::new(3, vec![1, 2, 2], vec![Proto::Tcp]).is_none());
        assert!(SequenceSpec::new(1, vec![1], vec![]).is_none());
    }

    #[test]
    fn debug_output_hides_the_knocks() {
        let s = Sequence(vec![Knock {
            port: 15001,
            proto: Proto::Tcp,
        }]);
        assert_eq!(format!("{s:?}"), "Sequence(1 knocks)");
    }
}
